"""Framework-neutral quantization math: parameters, (fake) quantization and range observers."""
