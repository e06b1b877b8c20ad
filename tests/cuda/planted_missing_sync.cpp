// The planted copy of group norm without the barrier in block_sum.
#define PLANT_NS planted_missing_sync
#define PLANT_MISSING_SYNC 1
#include "planted_group_norm.cu"
