// tests/cuda/test_norms.cpp built by nvcc against the real CUDA runtime (a GPU run).
#include "test_norms.cpp"
