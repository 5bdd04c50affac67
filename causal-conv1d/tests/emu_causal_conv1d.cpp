// The CUDA causal-conv1d sources compiled for the CPU emulator (kernel_infra/testing/cuda_emu.h): every .cu file and
// the binding, unchanged, in one translation unit (built with -DKERNEL_EMULATE).
#include "causal_conv1d_fp32.cu"
#include "causal_conv1d_fp16.cu"
#include "causal_conv1d_bf16.cu"
#include "causal_conv1d_cuda.cpp"
