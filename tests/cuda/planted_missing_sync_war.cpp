// The planted copy of group norm without the barrier that ends block_sum.
#define PLANT_NS planted_missing_sync_war
#define PLANT_MISSING_SYNC_WAR 1
#include "planted_group_norm.cu"
