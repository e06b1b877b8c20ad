// tests/cuda/test_fused_ops.cpp built by nvcc against the real CUDA runtime (a GPU run).
#include "test_fused_ops.cpp"
