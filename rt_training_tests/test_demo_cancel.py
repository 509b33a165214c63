"""The demo's Ctrl-C cancels runs through the webserver's GraphQL API: its requests are valid against the
installed Dagster's schema, and "in flight" means every status of a run Dagster started or will start that is
not final."""

from __future__ import annotations

import graphql
import pytest
from dagster import DagsterRunStatus
from dagster_graphql.schema import create_schema

from rt_training.cli.demo import IN_FLIGHT, IN_FLIGHT_QUERY, TERMINATE_MUTATION


@pytest.mark.parametrize("document", [IN_FLIGHT_QUERY, TERMINATE_MUTATION], ids=["in_flight", "terminate"])
def test_cancel_requests_match_the_dagster_graphql_schema(document: str) -> None:
    schema = create_schema().graphql_schema
    assert graphql.validate(schema, graphql.parse(document)) == []


def test_in_flight_is_every_status_that_is_not_final() -> None:
    final = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    # Left alone: runs managed outside Dagster, and suspended runs (no process; resumed by a person).
    not_ours = {DagsterRunStatus.MANAGED, DagsterRunStatus.SUSPENDED}
    assert set(IN_FLIGHT) == {s.value for s in DagsterRunStatus} - {s.value for s in final | not_ours}
