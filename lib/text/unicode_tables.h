/*
 * unicode_tables.h - the shapes of the generated character tables in
 * unicode_tables.c (written by scripts/gen_unicode_tables.py). Only
 * unicode.c reads them; everything else goes through unicode.h.
 */
#ifndef DF_TEXT_UNICODE_TABLES_H
#define DF_TEXT_UNICODE_TABLES_H

#include <stddef.h>
#include <stdint.h>

typedef struct df_uc_range { uint32_t first, last; } df_uc_range;
/* code points start + i*stride, i < count, lowercase to themselves + delta */
typedef struct df_uc_case_run { uint32_t start; int32_t count, stride, delta; } df_uc_case_run;
typedef struct df_uc_multi { uint32_t cp; int32_t n; uint32_t to[3]; } df_uc_multi;
typedef struct df_uc_ccc_run { uint32_t first, last; uint8_t ccc; } df_uc_ccc_run;
/* decomposition {cp, a, b (0 = singleton)} or composition {a, b, cp} */
typedef struct df_uc_decomp { uint32_t x, y, z; } df_uc_decomp;

extern const df_uc_range df_uc_letter[];
extern const size_t df_uc_letter_count;
extern const df_uc_range df_uc_number[];
extern const size_t df_uc_number_count;
extern const uint32_t df_uc_space[];
extern const size_t df_uc_space_count;
extern const df_uc_case_run df_uc_lower_runs[];
extern const size_t df_uc_lower_runs_count;
extern const df_uc_multi df_uc_lower_multi[];
extern const size_t df_uc_lower_multi_count;
extern const df_uc_ccc_run df_uc_ccc[];
extern const size_t df_uc_ccc_count;
extern const df_uc_decomp df_uc_decomp_map[];
extern const size_t df_uc_decomp_map_count;
extern const df_uc_decomp df_uc_comp_map[];
extern const size_t df_uc_comp_map_count;

#endif /* DF_TEXT_UNICODE_TABLES_H */
