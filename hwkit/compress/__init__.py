"""Compression and hardware-aware training methods: nn.Module -> nn.Module."""
