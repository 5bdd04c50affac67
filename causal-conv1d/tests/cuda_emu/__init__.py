"""CPU emulator of the CUDA execution model, used to test the CUDA kernels without a GPU."""
