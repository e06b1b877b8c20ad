// The planted copy of group norm with no bug planted (the control).
#define PLANT_NS planted_clean
#include "planted_group_norm.cu"
