"""Model inputs from silver columns: a feature state fitted from the data (statistics, vocabularies, tokenizers)
and saved with each checkpoint, and the batch arrays it turns rows into."""
