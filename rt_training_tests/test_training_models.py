"""Built-in models on the batch-dict contract, growth of a warm start, checkpoint args, user factories.

Inputs come from a small stand-in for the fitted feature state (``inputs`` and ``num_classes`` are all a model
builder reads). Everything runs on CPU with tiny sizes and a fixed seed.
"""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rt_training.features.inputs import InputInfo
from rt_training.spec import load_spec, parse_spec
from rt_training.training.models import (
    CausalLM,
    GrowthError,
    InputEncoder,
    ModelFactoryError,
    build_model,
    compatible,
    grow_state_dict,
    model_args,
)


@dataclass(frozen=True)
class State:
    """Stand-in for the fitted feature state: what build_model reads."""

    inputs: tuple[InputInfo, ...]
    num_classes: int | None = None


INPUTS = (
    InputInfo("x", "numeric"),
    InputInfo("n", "numeric", missing_indicator=True),
    InputInfo("c", "categorical", size=6),
    InputInfo("body", "text", size=40, max_length=12),
    InputInfo("h", "sequence_ids", size=9, max_length=5),
    InputInfo("v", "sequence_values", max_length=4),
    InputInfo("emb", "vector", size=3),
)
LABEL_FIELDS = {"binary": "y", "regression": "r", "multiclass": "k", "language_model": "body"}


def make_spec(kind: str = "binary", **model):
    fields = {
        "id": {"type": "string"},
        "t": {"type": "timestamp"},
        "x": {"type": "float"},
        "n": {"type": "float", "required": False},
        "c": {"type": "string"},
        "body": {"type": "text"},
        "h": {"type": "list", "items": "string"},
        "v": {"type": "list", "items": "float"},
        "emb": {"type": "vector", "dim": 3},
        "y": {"type": "int"},
        "r": {"type": "float"},
        "k": {"type": "string"},
    }
    return parse_spec(
        {
            "name": "models-test",
            "source": {"topic": "models-test"},
            "schema": {"id_field": "id", "time_field": "t", "fields": fields},
            "features": {
                "numeric": [{"name": "x"}, {"name": "n", "missing_indicator": True}],
                "categorical": [{"name": "c"}],
                "text": [{"name": "body", "max_length": 12}],
                "sequence": [{"name": "h", "max_length": 5}, {"name": "v", "max_length": 4}],
                "vector": [{"name": "emb"}],
            },
            "label": {"field": LABEL_FIELDS[kind], "kind": kind},
            "model": {
                "hidden": [16, 8],
                "embedding_dim": 4,
                "d_model": 16,
                "n_layers": 2,
                "n_heads": 2,
                **model,
            },
        }
    )


def padded(lengths: list[int], max_length: int, high: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Ids in [1, high) at the first ``length`` positions of each row, 0 (pad) after; and the mask."""
    mask = torch.arange(max_length)[None, :] < torch.tensor(lengths)[:, None]
    ids = torch.randint(1, high, (len(lengths), max_length), generator=gen) * mask
    return ids, mask


def make_batch(rows: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    text_lengths = [12, 7, 0, 3, 2][:rows]  # row 2: a null text, nothing kept
    body, body_mask = padded(text_lengths, 12, 40, gen)
    h, h_mask = padded([5, 1, 0, 3, 2][:rows], 5, 9, gen)
    v_mask = torch.arange(4)[None, :] < torch.tensor([4, 0, 2, 1, 3][:rows])[:, None]
    return {
        "x": torch.randn(rows, generator=gen),
        "n": torch.randn(rows, generator=gen),
        "n__missing": torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0][:rows]),
        "c": torch.randint(0, 6, (rows,), generator=gen),
        "body": body,
        "body__mask": body_mask,
        "h": h,
        "h__mask": h_mask,
        "v": torch.randn(rows, 4, generator=gen) * v_mask,
        "v__mask": v_mask,
        "emb": torch.randn(rows, 3, generator=gen),
    }


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("builtin", ["mlp", "logistic", "text_classifier"])
@pytest.mark.parametrize(
    ("kind", "num_classes", "shape"),
    [("binary", None, (5,)), ("regression", None, (5,)), ("multiclass", 7, (5, 7))],
)
def test_output_shapes(builtin, kind, num_classes, shape):
    torch.manual_seed(0)
    model = build_model(make_spec(kind, builtin=builtin), State(INPUTS, num_classes)).eval()
    out = model(make_batch())
    assert out.shape == shape
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_causal_lm_output_shape():
    torch.manual_seed(0)
    model = build_model(make_spec("language_model", builtin="causal_lm"), State(INPUTS))
    batch = make_batch()
    assert isinstance(model, CausalLM)
    assert model(batch).shape == (5, 12, 40)
    # The head is tied to the token embedding: one tensor of vocab rows, not two.
    assert [k for k in model.state_dict() if k.startswith(("tokens", "head"))] == ["tokens.weight"]
    # Shorter batches are fine; longer ones than the position table are refused by name.
    assert model({"body": batch["body"][:, :5]}).shape == (5, 5, 40)
    with pytest.raises(
        ValueError, match=r"batch\['body'\] has 13 positions, more than the model's max_length 12"
    ):
        model({"body": torch.zeros(1, 13, dtype=torch.long)})


def demo_inputs(spec, sizes):
    numeric = tuple(InputInfo(f.name, "numeric") for f in spec.features.numeric)
    categorical = tuple(
        InputInfo(c.name, "categorical", size=s)
        for c, s in zip(spec.features.categorical, sizes, strict=True)
    )
    return numeric + categorical


def test_tabular_mlp_matches_the_demo_architecture():
    spec = load_spec()
    assert (spec.model.builtin, spec.model.hidden, spec.model.embedding_dim) == ("mlp", [64, 32], 8)
    n_num, n_cat, emb = len(spec.features.numeric), len(spec.features.categorical), 8

    def expected(sizes):
        width = n_num + emb * n_cat
        return emb * sum(sizes) + (width * 64 + 64) + (64 * 32 + 32) + (32 * 1 + 1)

    # Before this package: a vocabulary had len(vocabulary) + 1 rows (0 = unknown), hash features their bucket
    # count, and TabularMLP had exactly expected(...) parameters for those sizes.
    before = (4, 11, 11, 1024, 2048)
    model = build_model(spec, State(demo_inputs(spec, before)))
    assert n_params(model) == expected(before) == 29_841
    # The same layers in the same order: the embeddings, then Linear/ReLU/Dropout blocks and the output layer.
    assert [type(m).__name__ for m in model.head] == ["Linear", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert [tuple(e.weight.shape) for e in model.encoder.embeddings.values()] == [(s, 8) for s in before]
    # The feature state's layout adds one row per feature (0 = null, 1 = the OOV bucket, then the vocabulary;
    # 1 + hash % buckets): 5 rows of 8 more, the rest unchanged.
    now = (1 + 1 + 3, 1 + 1 + 10, 1 + 1 + 10, 1 + 1024, 1 + 2048)
    assert n_params(build_model(spec, State(demo_inputs(spec, now)))) == expected(now) == 29_841 + 5 * 8
    # logistic: one weight per category (one-hot), then a weight per numeric input, one per categorical (a scale
    # on its one-wide embedding) and the bias.
    logistic = spec.model_copy(update={"model": spec.model.model_copy(update={"builtin": "logistic"})})
    assert n_params(build_model(logistic, State(demo_inputs(spec, now)))) == sum(now) + n_num + n_cat + 1


def test_tabular_init_is_seeded():
    spec = load_spec()
    state = State(demo_inputs(spec, (5, 12, 12, 1025, 2049)))
    torch.manual_seed(3)
    a = build_model(spec, state).state_dict()
    torch.manual_seed(3)
    b = build_model(spec, state).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_input_encoder_slices_are_exact():
    """Each input kind's slice, computed by hand for two rows."""
    inputs = (
        InputInfo("n", "numeric", missing_indicator=True),
        InputInfo("h", "sequence_ids", size=4, max_length=3),
        InputInfo("v", "sequence_values", max_length=3),
        InputInfo("emb", "vector", size=2),
    )
    enc = InputEncoder(inputs, embedding_dim=2)
    with torch.no_grad():
        enc.embeddings["h"].weight.copy_(torch.tensor([[100.0, 100.0], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    batch = {
        "n": torch.tensor([0.5, 0.0]),
        "n__missing": torch.tensor([0.0, 1.0]),
        "h": torch.tensor([[1, 3, 0], [0, 0, 0]]),
        "h__mask": torch.tensor([[True, True, False], [False, False, False]]),
        "v": torch.tensor([[1.0, 2.0, 6.0], [9.0, 0.0, 0.0]]),
        "v__mask": torch.tensor([[True, True, True], [True, False, False]]),
        "emb": torch.tensor([[0.25, -1.0], [2.0, 3.0]]),
    }
    out = enc(batch)
    assert enc.width == 2 + 2 + 2 + 2
    expected = torch.tensor(
        [
            [0.5, 0.0, 3.0, 4.0, 3.0, torch.log1p(torch.tensor(3.0)).item(), 0.25, -1.0],
            [0.0, 1.0, 0.0, 0.0, 9.0, torch.log1p(torch.tensor(1.0)).item(), 2.0, 3.0],
        ]
    )
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("builtin", ["mlp", "text_classifier"])
def test_masked_positions_do_not_change_the_output(builtin):
    torch.manual_seed(0)
    model = build_model(make_spec(builtin=builtin), State(INPUTS)).eval()
    batch = make_batch()
    changed = dict(batch)
    gen = torch.Generator().manual_seed(9)
    for name, high in (("body", 40), ("h", 9)):
        noise = torch.randint(1, high, batch[name].shape, generator=gen)
        changed[name] = torch.where(batch[name + "__mask"], batch[name], noise)
    changed["v"] = torch.where(batch["v__mask"], batch["v"], torch.full_like(batch["v"], 50.0))
    assert not torch.equal(changed["body"], batch["body"])
    with torch.no_grad():
        torch.testing.assert_close(model(changed), model(batch), rtol=0, atol=1e-6)
        # A kept position does change it.
        changed["body"] = batch["body"].clone()
        changed["body"][0, 1] = (batch["body"][0, 1] % 39) + 1
        assert (model(changed) - model(batch)).abs()[0] > 1e-6


def tiny_lm(vocab=40, max_length=12, seed=0, d_model=16, n_layers=2):
    torch.manual_seed(seed)
    return CausalLM(
        InputInfo("body", "text", size=vocab, max_length=max_length), d_model, n_layers, n_heads=2
    )


def test_causal_lm_is_causal():
    model = tiny_lm().eval()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 40, (3, 12), generator=gen)
    later = ids.clone()
    later[:, 6] = (ids[:, 6] % 39) + 1
    with torch.no_grad():
        a, b = model({"body": ids}), model({"body": later})
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=1e-6)
    assert (a[:, 6:] - b[:, 6:]).abs().amax() > 1e-3


def test_causal_lm_ignores_padding_after_the_text():
    model = tiny_lm().eval()
    gen = torch.Generator().manual_seed(2)
    ids, mask = padded([12, 6, 2], 12, 40, gen)
    junk = torch.where(mask, ids, torch.randint(1, 40, ids.shape, generator=gen))
    with torch.no_grad():
        a, b = model({"body": ids, "body__mask": mask}), model({"body": junk, "body__mask": mask})
    torch.testing.assert_close(a[mask], b[mask], rtol=0, atol=1e-6)


def lm_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    keep = mask[:, 1:]
    return F.cross_entropy(logits[:, :-1][keep], ids[:, 1:][keep])


def test_tiny_causal_lm_overfits_a_few_sequences():
    model = tiny_lm(vocab=20, max_length=10, seed=0, d_model=32)
    gen = torch.Generator().manual_seed(3)
    ids, mask = padded([10, 8, 10, 6], 10, 20, gen)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = lm_loss(model({"body": ids, "body__mask": mask}), ids, mask)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    # A fresh model predicts about uniformly (ln 20 = 3.0); 60 steps memorize the 30 next tokens (measured: 0.14
    # after 25 steps, 0.008 after 50).
    assert 2.8 < first < 3.2
    assert loss.item() < 0.05


def test_grow_state_dict_keeps_old_rows_and_adds_new_ones():
    spec = make_spec("multiclass")
    old_inputs = (InputInfo("x", "numeric"), InputInfo("c", "categorical", size=6))
    new_inputs = (InputInfo("x", "numeric"), InputInfo("c", "categorical", size=9))
    torch.manual_seed(0)
    old_model = build_model(spec, State(old_inputs, 3)).eval()
    old = old_model.state_dict()
    torch.manual_seed(1)
    model = build_model(spec, State(new_inputs, 5)).eval()
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    grown = grow_state_dict(old, model)
    model.load_state_dict(grown)
    new = model.state_dict()
    emb, out_w, out_b = "encoder.embeddings.c.weight", "head.4.weight", "head.4.bias"
    assert new[emb].shape == (9, 4) and new[out_w].shape == (5, 8) and new[out_b].shape == (5,)
    assert torch.equal(new[emb][:6], old[emb]) and torch.equal(new[emb][6:], fresh[emb][6:])
    assert torch.equal(new[out_w][:3], old[out_w]) and torch.equal(new[out_w][3:], fresh[out_w][3:])
    assert torch.equal(new[out_b][:3], old[out_b]) and torch.equal(new[out_b][3:], fresh[out_b][3:])
    for name in set(new) - {emb, out_w, out_b}:
        assert torch.equal(new[name], old[name]), name
    # On rows that use only old categories, the old classes' logits are the old model's.
    batch = {"x": torch.tensor([0.3, -1.0, 2.0]), "c": torch.tensor([0, 5, 2])}
    with torch.no_grad():
        torch.testing.assert_close(model(batch)[:, :3], old_model(batch), rtol=0, atol=1e-6)


def test_grow_state_dict_grows_the_tied_lm_head():
    old = tiny_lm(vocab=30, seed=0).state_dict()
    model = tiny_lm(vocab=34, seed=1)
    fresh = model.state_dict()["tokens.weight"].clone()
    model.load_state_dict(grow_state_dict(old, model))
    weight = model.state_dict()["tokens.weight"]
    assert torch.equal(weight[:30], old["tokens.weight"]) and torch.equal(weight[30:], fresh[30:])
    assert model({"body": torch.ones(1, 4, dtype=torch.long)}).shape == (1, 4, 34)


def test_grow_state_dict_refuses_anything_but_growth_along_dim_0():
    old = nn.Sequential(nn.Embedding(6, 4), nn.Linear(4, 3)).state_dict()
    with pytest.raises(
        GrowthError, match=r"parameter '0.weight' has shape \(6, 4\) in the checkpoint and \(5, 4\)"
    ):
        grow_state_dict(old, nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 3)))
    with pytest.raises(
        GrowthError, match=r"parameter '0.weight' has shape \(6, 4\) in the checkpoint and \(6, 5\)"
    ):
        grow_state_dict(old, nn.Sequential(nn.Embedding(6, 5), nn.Linear(4, 3)))
    with pytest.raises(
        GrowthError, match=r"parameter '1.weight' has shape \(3, 4\) in the checkpoint and \(3, 5\)"
    ):
        grow_state_dict(old, nn.Sequential(nn.Embedding(6, 4), nn.Linear(5, 3)))
    with pytest.raises(
        GrowthError, match=r"only in the model \['2.bias', '2.weight'\], only in the checkpoint \[\]"
    ):
        grow_state_dict(old, nn.Sequential(nn.Embedding(6, 4), nn.Linear(4, 3), nn.Linear(3, 1)))


def test_model_args_is_plain_data():
    spec = make_spec("multiclass")
    args = model_args(spec, State(INPUTS[:3], 4))
    assert json.loads(json.dumps(args)) == args
    assert args["inputs"] == [
        {"name": "x", "kind": "numeric", "size": 1, "max_length": None, "missing_indicator": False},
        {"name": "n", "kind": "numeric", "size": 1, "max_length": None, "missing_indicator": True},
        {"name": "c", "kind": "categorical", "size": 6, "max_length": None, "missing_indicator": False},
    ]
    assert (args["label_field"], args["label_kind"], args["num_classes"]) == ("k", "multiclass", 4)
    assert args["model"]["hidden"] == [16, 8]


def test_compatible_allows_growth_and_says_why_not():
    spec = make_spec("multiclass")
    have = model_args(spec, State(INPUTS, 3))
    grown = tuple(
        InputInfo(i.name, i.kind, i.size + 2, i.max_length, i.missing_indicator)
        if i.kind in ("categorical", "sequence_ids")
        else i
        for i in INPUTS
    )
    assert compatible(have, model_args(spec, State(grown, 5))) is None
    assert compatible(have, model_args(make_spec("multiclass", dropout=0.3), State(INPUTS, 3))) is None
    assert compatible(model_args(spec, State(grown, 5)), have) == (
        "num_classes: 5 in the checkpoint, 3 now (classes are never removed); "
        "input 'c' size: 8 in the checkpoint, 6 now (it may grow, never shrink); "
        "input 'h' size: 11 in the checkpoint, 9 now (it may grow, never shrink)"
    )
    wider = (*INPUTS[:-1], InputInfo("emb", "vector", size=4))
    assert compatible(have, model_args(spec, State(wider, 3))) == (
        "input 'emb' size: 3 in the checkpoint, 4 now (a vector's dimension cannot change)"
    )
    assert compatible(have, model_args(make_spec("multiclass", embedding_dim=6), State(INPUTS, 3))) == (
        "model.embedding_dim: 4 in the checkpoint, 6 now"
    )
    assert compatible(have, model_args(spec, State(INPUTS[1:], 3))).startswith(
        "inputs (name, kind, missing indicator): [('x', 'numeric', False), ('n', 'numeric', True)"
    )

    def body(max_length):
        return tuple(InputInfo("body", "text", 40, max_length) if i.name == "body" else i for i in INPUTS)

    assert compatible(have, model_args(spec, State(body(16), 3))) is None
    assert compatible(have, model_args(spec, State(body(8), 3))) == (
        "input 'body' max_length: 12 in the checkpoint, 8 now (it may grow, never shrink)"
    )
    binary = model_args(make_spec("binary"), State(INPUTS))
    assert compatible(have, binary) == (
        "label_field: 'k' in the checkpoint, 'y' now; label_kind: 'multiclass' in the checkpoint, 'binary' now; "
        "num_classes: 3 in the checkpoint, None now"
    )


def test_builtins_say_what_the_state_lacks():
    with pytest.raises(ValueError, match="label 'k' is multiclass but the feature state knows no classes"):
        build_model(make_spec("multiclass"), State(INPUTS, None))
    lm = make_spec("language_model", builtin="causal_lm")
    with pytest.raises(
        ValueError, match=r"text input 'body', which is not among the feature state's text inputs \[\]"
    ):
        build_model(lm, State(INPUTS[:3]))
    with pytest.raises(ValueError, match="text_classifier built-in needs at least one text input"):
        build_model(make_spec(builtin="text_classifier"), State(INPUTS[:3]))


def test_user_model_factory(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Linear(nn.Module):
                def __init__(self, names):
                    super().__init__()
                    self.names = names
                    self.lin = nn.Linear(len(names), 1)

                def forward(self, batch):
                    return self.lin(torch.stack([batch[n] for n in self.names], dim=1)).squeeze(-1)

            def make(spec, state):
                return Linear([i.name for i in state.inputs if i.kind == "numeric"])

            def not_a_module(spec, state):
                return "linear"

            def boom(spec, state):
                raise RuntimeError("no GPU here")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    state = State(INPUTS)

    def with_factory(path):
        return make_spec(factory=path)

    try:
        model = build_model(with_factory("my_models:make"), state)
        assert type(model).__name__ == "Linear" and model.names == ["x", "n"]
        assert model(make_batch()).shape == (5,)
        with pytest.raises(ModelFactoryError, match=r"returned str, not a torch\.nn\.Module"):
            build_model(with_factory("my_models:not_a_module"), state)
        with pytest.raises(
            ModelFactoryError,
            match=r"'my_models:boom' raised RuntimeError: no GPU here \(it is called as factory\(spec, state\)\)",
        ):
            build_model(with_factory("my_models:boom"), state)
        with pytest.raises(ModelFactoryError, match="has no attribute 'missing'"):
            build_model(with_factory("my_models:missing"), state)
        with pytest.raises(ModelFactoryError, match=r"cannot import module 'no_such_pkg\.models'"):
            build_model(with_factory("no_such_pkg.models:make"), state)
    finally:
        sys.modules.pop("my_models", None)
