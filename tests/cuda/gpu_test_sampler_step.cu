// tests/cuda/test_sampler_step.cpp built by nvcc against the real CUDA runtime (a GPU run).
#include "test_sampler_step.cpp"
