// tests/cuda/test_attention.cpp built by nvcc against the real CUDA runtime (a GPU run).
#include "test_attention.cpp"
