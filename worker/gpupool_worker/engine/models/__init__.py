"""Model runtimes: a BERT-style sentence encoder with swappable kernels, and loaders for TorchScript
and torch.export archives."""
