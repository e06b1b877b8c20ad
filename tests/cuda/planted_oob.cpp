// The planted copy of group norm writing one float past its output.
#define PLANT_NS planted_oob
#define PLANT_OOB 1
#include "planted_group_norm.cu"
