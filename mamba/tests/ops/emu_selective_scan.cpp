// The CUDA selective-scan sources compiled for the CPU emulator (causal_conv1d/kernel_infra/testing/cuda_emu.h):
// every .cu file and the binding, unchanged, in one translation unit (built with -DKERNEL_EMULATE).
#include "selective_scan_fwd_fp32.cu"
#include "selective_scan_fwd_fp16.cu"
#include "selective_scan_fwd_bf16.cu"
#include "selective_scan_bwd_fp32.cu"
#include "selective_scan_bwd_fp16.cu"
#include "selective_scan_bwd_bf16.cu"
#include "selective_scan_reduce.cu"
#include "selective_scan_cuda.cpp"
