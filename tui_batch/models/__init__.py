"""The model catalog: finding GGUF files (`catalog`) and reading their headers (`gguf`)."""
