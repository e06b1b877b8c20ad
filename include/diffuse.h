/*
 * diffuse.h - the whole public C ABI of libdiffuse.
 *
 * libdiffuse turns text into images, edits images inside a mask and makes
 * variations of images with Stable-Diffusion-family checkpoints, on the
 * user's own machine. This header is the only one a host includes.
 *
 * ABI rules (see docs and DESIGN §3):
 *  - Same DIFFUSE_VERSION_MAJOR = ABI compatible. The shared object's soname
 *    is libdiffuse.so.<MAJOR>.
 *  - Handles are opaque. A diffuse_model is immutable once loaded and may be
 *    shared by any number of threads. A diffuse_ctx is one execution state:
 *    use it from one thread at a time; any number of contexts per model.
 *  - Parameter structs begin with `uint32_t struct_size`, are filled with
 *    defaults by their `*_params_init()` function, and only ever grow at the
 *    end. The library reads only the fields inside `struct_size`, so a host
 *    built against an older header keeps working.
 *  - Every function that can fail returns a diffuse_status. Enum values are
 *    explicit and never reused.
 *  - What the library allocates, the library frees. Free functions accept NULL.
 *  - The library never exits, aborts or prints on its own; messages go to the
 *    log callback of the model load or context that produced them.
 */
#ifndef DIFFUSE_H
#define DIFFUSE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#  if defined(DIFFUSE_BUILDING)
#    define DIFFUSE_API __declspec(dllexport)
#  else
#    define DIFFUSE_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define DIFFUSE_API __attribute__((visibility("default")))
#else
#  define DIFFUSE_API
#endif

/* ------------------------------------------------------------------------ */
/* Versions                                                                  */
/* ------------------------------------------------------------------------ */

#define DIFFUSE_VERSION_MAJOR 0
#define DIFFUSE_VERSION_MINOR 4
#define DIFFUSE_VERSION_PATCH 0
/** MAJOR*10000 + MINOR*100 + PATCH of the header you compiled against. */
#define DIFFUSE_VERSION_NUMBER \
    (DIFFUSE_VERSION_MAJOR * 10000 + DIFFUSE_VERSION_MINOR * 100 + DIFFUSE_VERSION_PATCH)

/**
 * diffuse_version() - version of the library actually loaded.
 * @return MAJOR*10000 + MINOR*100 + PATCH. Compare with DIFFUSE_VERSION_NUMBER
 *         to detect a header/library mismatch.
 * Thread-safety: any thread. Since 0.1.
 */
DIFFUSE_API uint32_t diffuse_version(void);

/**
 * diffuse_version_string() - "MAJOR.MINOR.PATCH" of the library loaded.
 * @return a static string; never NULL; do not free.
 * Thread-safety: any thread. Since 0.1.
 */
DIFFUSE_API const char *diffuse_version_string(void);

/* ------------------------------------------------------------------------ */
/* Status codes                                                              */
/* ------------------------------------------------------------------------ */

/*
 * X-macro list: (name, value, message). It produces both the enum and the
 * strings returned by diffuse_status_string(). Values are appended only;
 * a removed value stays here as a comment and is never reused.
 */
#define DIFFUSE_STATUS_LIST(X)                                                      \
    X(DIFFUSE_OK, 0, "success")                                                     \
    X(DIFFUSE_ERR_INVALID_ARGUMENT, 1, "invalid argument")                          \
    X(DIFFUSE_ERR_OUT_OF_MEMORY, 2, "out of memory")                                \
    X(DIFFUSE_ERR_IO, 3, "input/output error")                                      \
    X(DIFFUSE_ERR_NOT_FOUND, 4, "file or directory not found")                      \
    X(DIFFUSE_ERR_MODEL_FORMAT, 5, "malformed model file")                          \
    X(DIFFUSE_ERR_MODEL_TRUNCATED, 6, "model file is truncated")                    \
    X(DIFFUSE_ERR_MODEL_MISSING_TENSOR, 7, "model file lacks a required tensor")    \
    X(DIFFUSE_ERR_MODEL_SHAPE, 8, "model tensor has an unexpected shape")           \
    X(DIFFUSE_ERR_MODEL_CONFIG, 9, "invalid or unsupported model configuration")    \
    X(DIFFUSE_ERR_MODEL_UNSAFE, 10, "refused unsafe model format (pickle)")         \
    X(DIFFUSE_ERR_UNSUPPORTED, 11, "not supported by this build or version")        \
    X(DIFFUSE_ERR_NO_DEVICE, 12, "requested device is not available")               \
    X(DIFFUSE_ERR_DEVICE, 13, "device error")                                       \
    X(DIFFUSE_CANCELLED, 14, "cancelled")                                           \
    X(DIFFUSE_ERR_BUSY, 15, "context is busy")                                      \
    X(DIFFUSE_ERR_INTERNAL, 16, "internal error")                                   \
    X(DIFFUSE_ERR_TIMEOUT, 17, "timed out before the job finished")

#define DIFFUSE_STATUS_ENUM_ITEM_(name, value, msg) name = value,
/** Result of every fallible call. DIFFUSE_OK (0) is success. */
typedef enum diffuse_status { DIFFUSE_STATUS_LIST(DIFFUSE_STATUS_ENUM_ITEM_) } diffuse_status;
#undef DIFFUSE_STATUS_ENUM_ITEM_

/**
 * diffuse_status_string() - short English description of a status.
 * @return a static string; "unknown status" for values this version does not
 *         know. Never NULL; do not free.
 * Thread-safety: any thread. Since 0.1.
 */
DIFFUSE_API const char *diffuse_status_string(diffuse_status status);

/* ------------------------------------------------------------------------ */
/* Callbacks                                                                 */
/* ------------------------------------------------------------------------ */

/** Severity of a log message. */
typedef enum diffuse_log_level {
    DIFFUSE_LOG_ERROR = 0,
    DIFFUSE_LOG_WARN = 1,
    DIFFUSE_LOG_INFO = 2,
    DIFFUSE_LOG_DEBUG = 3
} diffuse_log_level;

/**
 * Log callback. Called on the thread that made the library call which logs
 * (the thread calling diffuse_model_load, or the thread using the context;
 * for a job, its worker thread).
 * @message is valid only during the call. Must not call back into the
 * library with the same context.
 */
typedef void (*diffuse_log_fn)(diffuse_log_level level, const char *message, void *user);

/** What a run is doing when progress is reported. */
typedef enum diffuse_stage {
    DIFFUSE_STAGE_LOAD = 0,    /**< reading weights */
    DIFFUSE_STAGE_TEXT = 1,    /**< encoding the prompt */
    DIFFUSE_STAGE_ENCODE = 2,  /**< VAE-encoding an input image */
    DIFFUSE_STAGE_DENOISE = 3, /**< the sampler loop */
    DIFFUSE_STAGE_DECODE = 4   /**< VAE-decoding latents */
} diffuse_stage;

/** Progress report passed to diffuse_progress_fn. Grows at the end only. */
typedef struct diffuse_progress {
    uint32_t struct_size;  /**< sizeof(diffuse_progress) of the library */
    diffuse_stage stage;   /**< what is running */
    uint32_t step;         /**< steps done in this stage, 0..total */
    uint32_t total;        /**< steps in this stage */
    uint32_t image_index;  /**< first image of the batch being worked on */
    uint32_t image_count;  /**< images requested in this call */
    double elapsed_seconds; /**< since the call started */
} diffuse_progress;

/**
 * Progress callback. Called on the thread that runs the call (the thread
 * calling diffuse_generate/edit/variation, or for a job started with
 * diffuse_job_start_*, the job's worker thread). Return 0 to continue, nonzero
 * to cancel: the call then returns DIFFUSE_CANCELLED within one step and the
 * context stays usable. @progress is valid only during the call.
 */
typedef int (*diffuse_progress_fn)(const diffuse_progress *progress, void *user);

/* ------------------------------------------------------------------------ */
/* Models                                                                    */
/* ------------------------------------------------------------------------ */

/** A loaded checkpoint. Immutable; share it between threads freely. */
typedef struct diffuse_model diffuse_model;

/** How weights are kept in host memory after loading. */
typedef enum diffuse_weight_type {
    DIFFUSE_WEIGHTS_AUTO = 0, /**< the CPU backend's type (float32 today) */
    DIFFUSE_WEIGHTS_F32 = 1,
    DIFFUSE_WEIGHTS_F16 = 2,
    DIFFUSE_WEIGHTS_BF16 = 3
} diffuse_weight_type;

/** Options for diffuse_model_load(). Fill with diffuse_model_params_init(). */
typedef struct diffuse_model_params {
    uint32_t struct_size;        /**< sizeof(diffuse_model_params); set by init */
    diffuse_log_fn log_fn;       /**< NULL = no logging */
    void *log_user;              /**< passed to log_fn */
    diffuse_log_level log_level; /**< most verbose level delivered; default WARN */
    diffuse_weight_type weight_type; /**< default AUTO; others not yet supported */
    /** Optional buffer that receives a NUL-terminated message on failure
     *  (which file, which tensor, expected vs found). May be NULL. */
    char *error_buf;
    size_t error_buf_size;       /**< bytes available in error_buf */
    /** Since 0.3: called with stage DIFFUSE_STAGE_LOAD, step/total counting
     *  the weight files (and the final network setup) as they are read;
     *  return nonzero to cancel: the load then returns DIFFUSE_CANCELLED
     *  with nothing loaded. Called on the loading thread. NULL = none. */
    diffuse_progress_fn progress_fn;
    void *progress_user;         /**< passed to progress_fn */
} diffuse_model_params;

/**
 * diffuse_model_params_init() - fill @params with defaults.
 * Sets struct_size to the library's size. Accepts NULL (does nothing).
 * Thread-safety: any thread. Since 0.1.
 */
DIFFUSE_API void diffuse_model_params_init(diffuse_model_params *params);

/**
 * diffuse_model_load() - load a checkpoint.
 * @path: a diffusers folder (model_index.json with unet/, vae/, text_encoder/,
 *        tokenizer/, scheduler/) or a single-file original checkpoint
 *        (.safetensors). Pickle checkpoints (.ckpt, .pt, .bin) are refused.
 * @params: NULL for defaults.
 * @out_model: receives the model; set to NULL on failure.
 * @return DIFFUSE_OK;
 *         DIFFUSE_ERR_INVALID_ARGUMENT (NULL path/out_model, bad params);
 *         DIFFUSE_ERR_NOT_FOUND (path or a required file missing, or a
 *         folder without model_index.json);
 *         DIFFUSE_ERR_IO (read/mmap failure);
 *         DIFFUSE_ERR_MODEL_FORMAT (malformed safetensors or JSON);
 *         DIFFUSE_ERR_MODEL_TRUNCATED (file shorter than its header says);
 *         DIFFUSE_ERR_MODEL_MISSING_TENSOR, DIFFUSE_ERR_MODEL_SHAPE (tensors
 *         do not match what the config implies);
 *         DIFFUSE_ERR_MODEL_CONFIG (invalid or unsupported config.json);
 *         DIFFUSE_ERR_MODEL_UNSAFE (pickle checkpoint);
 *         DIFFUSE_ERR_UNSUPPORTED (a format or option this version lacks);
 *         DIFFUSE_ERR_OUT_OF_MEMORY.
 *         On failure nothing is half-loaded; the message goes to
 *         params->error_buf and to the log callback at ERROR level.
 * Ownership: free the model with diffuse_model_free() after every context
 *         created from it has been freed. Weight files stay memory-mapped
 *         while the model lives; do not modify them.
 * Thread-safety: any thread; concurrent loads are independent. Since 0.1.
 */
DIFFUSE_API diffuse_status diffuse_model_load(const char *path, const diffuse_model_params *params,
                                              diffuse_model **out_model);

/**
 * diffuse_model_free() - release a model. Accepts NULL.
 * All contexts created from it must have been freed before.
 * Thread-safety: no other thread may use the model during the call. Since 0.1.
 */
DIFFUSE_API void diffuse_model_free(diffuse_model *model);

/** Model families libdiffuse recognises. */
typedef enum diffuse_model_family {
    DIFFUSE_FAMILY_UNKNOWN = 0,
    DIFFUSE_FAMILY_SD1 = 1, /**< CLIP ViT-L/14 text encoder, 768-wide context */
    DIFFUSE_FAMILY_SD2 = 2  /**< OpenCLIP ViT-H/14 text encoder, 1024-wide context */
} diffuse_model_family;

/** Facts about a loaded model. Fill struct_size before calling. */
typedef struct diffuse_model_info {
    uint32_t struct_size;          /**< caller sets sizeof(diffuse_model_info) */
    diffuse_model_family family;
    uint32_t unet_in_channels;     /**< 4, or 9 for inpainting checkpoints */
    uint32_t latent_channels;      /**< VAE latent channels (4) */
    uint32_t vae_scale_factor;     /**< pixels per latent (8) */
    uint32_t sample_size;          /**< native latent size from the UNet config */
    uint32_t text_hidden_size;     /**< text encoder width */
    uint32_t text_layers;          /**< text encoder layers */
    int32_t v_prediction;          /**< 1 if the scheduler predicts v */
    uint64_t unet_parameters;      /**< parameter counts of each component */
    uint64_t vae_parameters;
    uint64_t text_encoder_parameters;
    uint64_t weight_bytes;         /**< bytes of weights as stored on disk */
    /** How most weights (by bytes) are stored in the files: F32, F16 or
     *  BF16 (since 0.3). */
    diffuse_weight_type weight_dtype;
    /** Host memory the loaded model holds once every weight has been used:
     *  its float32 copies of converted weights plus the file pages of the
     *  float32 weights it reads in place (since 0.3; the model part of
     *  diffuse_estimate_memory). */
    uint64_t host_bytes;
} diffuse_model_info;

/**
 * diffuse_model_get_info() - describe a loaded model.
 * @info: caller-owned; set info->struct_size first. Fields beyond it are
 *        not written.
 * @return DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (NULL or struct_size too small).
 * Thread-safety: any thread. Since 0.1.
 */
DIFFUSE_API diffuse_status diffuse_model_get_info(const diffuse_model *model, diffuse_model_info *info);

/**
 * diffuse_tokenize() - the CLIP token ids the model's tokenizer gives @text,
 *        including the start and end tokens, before padding and truncation,
 *        exactly as transformers' CLIPTokenizer. Models without a tokenizer
 *        folder (single-file checkpoints) use the standard CLIP vocabulary
 *        built into the library. The pipelines keep the first 77 ids (75
 *        tokens between start and end); hosts use @count to show prompt length.
 * @ids: caller buffer of @capacity entries (may be NULL when capacity is 0).
 * @count: receives the number of ids the text has (may exceed capacity; then
 *        only the first @capacity are written).
 * @return DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (NULL model, text or count,
 *         ids NULL with capacity > 0, or text that is not valid UTF-8);
 *         DIFFUSE_ERR_OUT_OF_MEMORY.
 * Thread-safety: any thread. Since 0.1.
 */
DIFFUSE_API diffuse_status diffuse_tokenize(const diffuse_model *model, const char *text, int32_t *ids,
                                            size_t capacity, size_t *count);

/* ------------------------------------------------------------------------ */
/* Contexts                                                                  */
/* ------------------------------------------------------------------------ */

/** One execution state: device, workspace, callbacks. One thread at a time. */
typedef struct diffuse_ctx diffuse_ctx;

/** Where a context runs. */
typedef enum diffuse_device {
    DIFFUSE_DEVICE_AUTO = 0, /**< CUDA when available, else CPU (logged) */
    DIFFUSE_DEVICE_CPU = 1,
    DIFFUSE_DEVICE_CUDA = 2
} diffuse_device;

/** Numeric precision of a context's activations and weights on the device. */
typedef enum diffuse_precision {
    DIFFUSE_PRECISION_AUTO = 0, /**< F32 on the CPU, F16 on CUDA */
    DIFFUSE_PRECISION_F32 = 1,
    DIFFUSE_PRECISION_F16 = 2,
    DIFFUSE_PRECISION_BF16 = 3
} diffuse_precision;

/** Options for diffuse_ctx_create(). Fill with diffuse_ctx_params_init(). */
typedef struct diffuse_ctx_params {
    uint32_t struct_size;        /**< sizeof(diffuse_ctx_params); set by init */
    diffuse_device device;       /**< default AUTO */
    int32_t device_index;        /**< GPU ordinal for CUDA; default 0 */
    int32_t n_threads;           /**< CPU threads; 0 (default) = all cores */
    diffuse_precision precision; /**< default AUTO */
    diffuse_log_fn log_fn;       /**< NULL = no logging */
    void *log_user;
    diffuse_log_level log_level; /**< default WARN */
    diffuse_progress_fn progress_fn; /**< NULL = no progress reports */
    void *progress_user;
    /** Working memory (the context's arena: activations and scratch, not
     *  the model's weights) the context may use, in bytes; 0 = no limit. A
     *  run that would need more decodes with the VAE in blended tiles, and
     *  fails with DIFFUSE_ERR_OUT_OF_MEMORY before starting if even that
     *  does not fit. Without a budget, images whose VAE pass would need over
     *  1.5 GiB are tiled too. On CUDA (since 0.4) the budget is for all the
     *  device memory the context allocates: its arena and its device copy
     *  of the weights (see diffuse_ctx_get_memory()). */
    uint64_t memory_budget;
} diffuse_ctx_params;

/**
 * diffuse_ctx_params_init() - fill @params with defaults. Accepts NULL.
 * Thread-safety: any thread. Since 0.1.
 */
DIFFUSE_API void diffuse_ctx_params_init(diffuse_ctx_params *params);

/**
 * diffuse_ctx_create() - create an execution context for @model.
 * @params: NULL for defaults.
 * @out_ctx: receives the context; NULL on failure.
 * @return DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (NULL model/out_ctx,
 *         out-of-range enum or thread count); DIFFUSE_ERR_NO_DEVICE
 *         (device CUDA requested but no usable GPU, driver or CUDA module);
 *         DIFFUSE_ERR_UNSUPPORTED (a precision or budget the chosen device
 *         does not support); DIFFUSE_ERR_OUT_OF_MEMORY.
 * Ownership: free with diffuse_ctx_free() before freeing the model.
 * Thread-safety: any thread; the model may be shared. Since 0.1.
 */
DIFFUSE_API diffuse_status diffuse_ctx_create(const diffuse_model *model, const diffuse_ctx_params *params,
                                              diffuse_ctx **out_ctx);

/**
 * diffuse_ctx_free() - release a context and all memory it holds. Accepts NULL.
 * If a job of the context (diffuse_job_start_*) is still queued or running,
 * it is cancelled first and this waits (about one step) until the job's
 * worker has let go of the context (since 0.2). The job handle stays valid:
 * it finishes CANCELLED (or as it had finished) at once, which
 * diffuse_job_wait() observes, and must still be freed with
 * diffuse_job_free(), before or after the context.
 * Thread-safety: no other thread may use the context during the call (a
 * running job's worker excepted). Since 0.1.
 */
DIFFUSE_API void diffuse_ctx_free(diffuse_ctx *ctx);

/**
 * diffuse_ctx_last_error() - message of the last failed call on @ctx.
 * @return a NUL-terminated string owned by the context, valid until the next
 *         call on it; "" when the last call succeeded; a static message for
 *         a NULL ctx. Never NULL.
 * Thread-safety: the thread using the context. Since 0.1.
 */
DIFFUSE_API const char *diffuse_ctx_last_error(const diffuse_ctx *ctx);

/* ------------------------------------------------------------------------ */
/* Images                                                                    */
/* ------------------------------------------------------------------------ */

/** Layout of one pixel in memory. */
typedef enum diffuse_pixel_format {
    DIFFUSE_PIXEL_RGB8 = 0,  /**< 3 bytes: R, G, B */
    DIFFUSE_PIXEL_RGBA8 = 1, /**< 4 bytes: R, G, B, A */
    DIFFUSE_PIXEL_BGRA8 = 2  /**< 4 bytes: B, G, R, A */
} diffuse_pixel_format;

/** Which row comes first in memory. */
typedef enum diffuse_row_origin {
    DIFFUSE_ORIGIN_TOP_LEFT = 0,   /**< first row is the top of the picture */
    DIFFUSE_ORIGIN_BOTTOM_LEFT = 1 /**< first row is the bottom (OpenGL textures) */
} diffuse_row_origin;

/** How 8-bit values encode light. */
typedef enum diffuse_color_space {
    DIFFUSE_COLOR_SRGB = 0,  /**< sRGB-encoded (what PNG files hold) */
    DIFFUSE_COLOR_LINEAR = 1 /**< linear light */
} diffuse_color_space;

/**
 * An 8-bit image in caller or library memory. Inputs are read only; images
 * returned in diffuse_images are owned by the library.
 */
typedef struct diffuse_image {
    uint32_t width;   /**< pixels */
    uint32_t height;  /**< pixels */
    uint32_t stride;  /**< bytes from one row to the next (>= width * bytes per pixel) */
    diffuse_pixel_format format;
    diffuse_row_origin origin;
    diffuse_color_space color_space;
    uint8_t *data;    /**< height rows of stride bytes */
} diffuse_image;

/** Images returned by generate/edit/variation. Free with diffuse_images_free(). */
typedef struct diffuse_images {
    uint32_t count;         /**< number of images */
    diffuse_image *images;  /**< count images, library-owned pixel memory */
    uint64_t *seeds;        /**< seed that produced each image */
} diffuse_images;

/**
 * diffuse_images_free() - release images returned by the library. Accepts NULL.
 * Thread-safety: any thread. Since 0.1.
 */
DIFFUSE_API void diffuse_images_free(diffuse_images *images);

/* ------------------------------------------------------------------------ */
/* Generation                                                                */
/* ------------------------------------------------------------------------ */

/** Sampling algorithms, each matching a diffusers scheduler. */
typedef enum diffuse_sampler {
    DIFFUSE_SAMPLER_DEFAULT = 0,  /**< the model's scheduler/scheduler_config.json */
    DIFFUSE_SAMPLER_DDIM = 1,
    DIFFUSE_SAMPLER_DDPM = 2,
    DIFFUSE_SAMPLER_PNDM = 3,
    DIFFUSE_SAMPLER_LMS = 4,
    DIFFUSE_SAMPLER_EULER = 5,
    DIFFUSE_SAMPLER_EULER_A = 6,
    DIFFUSE_SAMPLER_HEUN = 7,
    DIFFUSE_SAMPLER_DPMPP_2M = 8,
    DIFFUSE_SAMPLER_DPMPP_2M_KARRAS = 9,
    DIFFUSE_SAMPLER_DPMPP_SDE = 10,
    DIFFUSE_SAMPLER_UNIPC = 11
} diffuse_sampler;

/** Output image description shared by the three calls. */
typedef struct diffuse_output_format {
    diffuse_pixel_format format;     /**< default RGB8 */
    diffuse_row_origin origin;       /**< default TOP_LEFT */
    diffuse_color_space color_space; /**< default SRGB */
} diffuse_output_format;

/** Options for diffuse_generate(). Fill with diffuse_generate_params_init(). */
typedef struct diffuse_generate_params {
    uint32_t struct_size;         /**< set by init */
    const char *prompt;           /**< UTF-8; required (may be "") */
    const char *negative_prompt;  /**< UTF-8; NULL or "" = unconditional */
    uint32_t n_images;            /**< 1..16; default 1 */
    uint32_t width;               /**< pixels, multiple of 8; 0 = model's native size */
    uint32_t height;              /**< pixels, multiple of 8; 0 = model's native size */
    uint32_t steps;               /**< denoising steps, 1..1000; default 30 */
    float guidance_scale;         /**< classifier-free guidance; <= 1 disables; default 7.5 */
    float guidance_rescale;       /**< 0..1; default 0 */
    diffuse_sampler sampler;      /**< default DEFAULT */
    uint64_t seed;                /**< image i uses seed + i */
    uint32_t clip_skip;           /**< diffusers' clip_skip; 0 = last layer */
    diffuse_output_format output; /**< layout of returned images */
    /** 1 = seamless horizontally: every padded convolution of the UNet and
     *  the VAE decoder wraps around left-right (torch padding_mode
     *  "circular"), so the image tiles without a seam (since 0.3; 0.1 and
     *  0.2 returned DIFFUSE_ERR_UNSUPPORTED). The VAE then decodes whole,
     *  never in blended tiles (a memory_budget too small for that gives
     *  DIFFUSE_ERR_OUT_OF_MEMORY). 0 (default) or 1. */
    uint32_t tile_x;
    uint32_t tile_y;              /**< 1 = seamless vertically (as tile_x, top-bottom) */
    /** Since 0.3: NULL (default), or an array of n_images images in the
     *  caller's memory that receive the results instead of library-allocated
     *  pixels. Each must be exactly the output size, with a valid format,
     *  origin, colour space and a stride of at least width * bytes per
     *  pixel; its format, origin and colour space are used (the output
     *  field is ignored). Bytes between rows are not written. The returned
     *  diffuse_images then points at these buffers; diffuse_images_free()
     *  leaves them alone. A job writes them from its worker thread and
     *  keeps only this pointer: keep the array of descriptors and the
     *  pixels alive and untouched until the job has finished. On failure
     *  their contents are unspecified. */
    diffuse_image *output_images;
} diffuse_generate_params;

/**
 * diffuse_generate_params_init() - fill @params with defaults. Accepts NULL.
 * Thread-safety: any thread. Since 0.1.
 */
DIFFUSE_API void diffuse_generate_params_init(diffuse_generate_params *params);

/**
 * diffuse_generate() - text to image (DALL·E images/generations).
 * @out_images: receives n_images images; NULL on failure.
 * @return DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (NULL pointers, sizes not
 *         multiples of 8, counts out of range); DIFFUSE_CANCELLED (the
 *         progress callback asked to stop); DIFFUSE_ERR_OUT_OF_MEMORY;
 *         DIFFUSE_ERR_DEVICE; DIFFUSE_ERR_UNSUPPORTED (this version cannot
 *         run the pipeline yet); DIFFUSE_ERR_BUSY (since 0.2: a job or
 *         another call holds the context; returned at once, the context's
 *         message unchanged). The message is in diffuse_ctx_last_error().
 * Ownership: free *out_images with diffuse_images_free().
 * Thread-safety: one thread per context at a time. Since 0.1.
 */
DIFFUSE_API diffuse_status diffuse_generate(diffuse_ctx *ctx, const diffuse_generate_params *params,
                                            diffuse_images **out_images);

/** Options for diffuse_edit(). Fill with diffuse_edit_params_init(). */
typedef struct diffuse_edit_params {
    uint32_t struct_size;         /**< set by init */
    /** Required; the picture to edit. Width and height multiples of 8 (and
     *  of the model's VAE scale factor), at most 8192; it is not resized.
     *  Its alpha is not used as colour. */
    const diffuse_image *image;
    /** NULL: the image's alpha marks the edit: alpha 0 = edit, any other
     *  value = keep (needs RGBA8 or BGRA8), as DALL·E's images/edits.
     *  Otherwise a mask image of the same size, any format and origin:
     *  white = edit, precisely luminance >= 128 with PIL's convert("L")
     *  weights ((19595 R + 38470 G + 7471 B + 32768) >> 16); its alpha and
     *  color_space are ignored. */
    const diffuse_image *mask;
    const char *prompt;           /**< UTF-8; required (may be "") */
    const char *negative_prompt;  /**< NULL or "" = unconditional */
    uint32_t n_images;            /**< 1..16; default 1 */
    uint32_t steps;               /**< default 30; int(steps * strength) of them run */
    /** default 7.5; <= 1 disables guidance; with prompt and negative prompt
     *  both empty it has no effect (both halves are equal) and is skipped */
    float guidance_scale;
    /** (0, 1]; default 1.0: start from pure noise; below 1 start from the
     *  image's latents noised to that level */
    float strength;
    diffuse_sampler sampler;      /**< default DEFAULT */
    uint64_t seed;                /**< image i uses seed + i (see diffuse_edit) */
    /** 0..256 pixels; default 0. Kept pixels at Euclidean distance d <= F
     *  from the nearest edited pixel are blended: d / (F + 1) of the input
     *  plus the rest of the repainted image. 0 = a hard edge. */
    float mask_feather;
    diffuse_output_format output;
    /** Since 0.3: NULL (default), or an array of n_images images in the
     *  caller's memory that receive the results instead of library-allocated
     *  pixels. Each must be exactly the output size, with a valid format,
     *  origin, colour space and a stride of at least width * bytes per
     *  pixel; its format, origin and colour space are used (the output
     *  field is ignored). Bytes between rows are not written. The returned
     *  diffuse_images then points at these buffers; diffuse_images_free()
     *  leaves them alone. A job writes them from its worker thread and
     *  keeps only this pointer: keep the array of descriptors and the
     *  pixels alive and untouched until the job has finished. On failure
     *  their contents are unspecified. */
    diffuse_image *output_images;
} diffuse_edit_params;

/**
 * diffuse_edit_params_init() - fill @params with defaults. Accepts NULL.
 * Thread-safety: any thread. Since 0.1.
 */
DIFFUSE_API void diffuse_edit_params_init(diffuse_edit_params *params);

/**
 * diffuse_edit() - repaint the masked part of an image (DALL·E images/edits),
 * as diffusers' StableDiffusionInpaintPipeline with height and width = the
 * image's size: the mask is binarised as above and taken to latent size by
 * nearest neighbour (the top-left pixel of each f x f block). Inpainting
 * models (9-channel UNet) get [latents, mask, masked-image latents]; other
 * models (4-channel UNet) take the pipeline's latent-blending path (outside
 * the mask the noised image latents replace the sample after every step).
 * Then the pixels the mask keeps are pasted back from the input: their RGB
 * comes back unchanged (converted only when the output colour space differs
 * from the input's) and their alpha is the input's (255 for RGB8 input);
 * repainted pixels have alpha 255. Images are @image's size.
 * Seeds: image i uses the generator of seed + i for its noise, as diffusers
 * given a list of generators; like diffusers, the VAE posterior samples of
 * the image and of the masked image are drawn once, from the generator of
 * seed + 0, and shared by all images, so for i > 0 image i matches
 * diffusers' batched call, not a call with n_images 1 and seed + i.
 * Progress: TEXT, then ENCODE (one step per VAE encode: the image when its
 * latents are used, the masked image for inpainting models), then per image
 * DENOISE (the evaluations that run) and DECODE. Where the context's
 * memory_budget (or the size) calls for it, the VAE encodes and decodes run
 * in blended tiles, as diffuse_generate's decode does.
 * @return as diffuse_generate(), plus DIFFUSE_ERR_INVALID_ARGUMENT for a
 *         missing image, sides that are not multiples of 8 (or of the VAE
 *         scale factor) or above 8192, a mask of another size, alpha-mask
 *         mode with an image without alpha, strength outside (0, 1] or too
 *         small to leave one step, mask_feather outside 0..256;
 *         DIFFUSE_ERR_UNSUPPORTED for a UNet with other than 4 or 9 input
 *         channels.
 * Ownership: free *out_images with diffuse_images_free(). Input images are
 *         only read and may be freed after the call returns.
 * Thread-safety: one thread per context at a time. Since 0.1.
 */
DIFFUSE_API diffuse_status diffuse_edit(diffuse_ctx *ctx, const diffuse_edit_params *params,
                                        diffuse_images **out_images);

/** Options for diffuse_variation(). Fill with diffuse_variation_params_init(). */
typedef struct diffuse_variation_params {
    uint32_t struct_size;         /**< set by init */
    /** Required. Width and height multiples of 8 (and of the model's VAE
     *  scale factor), at most 8192; it is not resized. Alpha is ignored. */
    const diffuse_image *image;
    const char *prompt;           /**< NULL or "" = unconditional (the default) */
    const char *negative_prompt;  /**< NULL or "" */
    uint32_t n_images;            /**< 1..16; default 1 */
    uint32_t steps;               /**< default 30; int(steps * strength) of them run */
    /** default 7.5; <= 1 disables guidance; with prompt and negative prompt
     *  both empty it has no effect (both halves are equal) and is skipped */
    float guidance_scale;
    float strength;               /**< (0, 1]; default 0.7; near 1 little of the image is left */
    diffuse_sampler sampler;
    uint64_t seed;                /**< image i uses seed + i */
    diffuse_output_format output;
    /** Since 0.3: NULL (default), or an array of n_images images in the
     *  caller's memory that receive the results instead of library-allocated
     *  pixels. Each must be exactly the output size, with a valid format,
     *  origin, colour space and a stride of at least width * bytes per
     *  pixel; its format, origin and colour space are used (the output
     *  field is ignored). Bytes between rows are not written. The returned
     *  diffuse_images then points at these buffers; diffuse_images_free()
     *  leaves them alone. A job writes them from its worker thread and
     *  keeps only this pointer: keep the array of descriptors and the
     *  pixels alive and untouched until the job has finished. On failure
     *  their contents are unspecified. */
    diffuse_image *output_images;
} diffuse_variation_params;

/**
 * diffuse_variation_params_init() - fill @params with defaults. Accepts NULL.
 * Thread-safety: any thread. Since 0.1.
 */
DIFFUSE_API void diffuse_variation_params_init(diffuse_variation_params *params);

/**
 * diffuse_variation() - variations of an image (DALL·E images/variations),
 * as diffusers' StableDiffusionImg2ImgPipeline: the image is VAE-encoded,
 * and image i draws from the generator of seed + i, in diffusers' order,
 * the posterior sample (its latents), the noise that takes them to
 * @strength, then any sampler noise; it is denoised with the optional
 * prompt. Image i is the image of a call with n_images 1 and seed + i.
 * Images are @image's size. Progress: TEXT, ENCODE (0/1, 1/1), then per
 * image DENOISE (the evaluations that run) and DECODE. VAE passes are
 * tiled as in diffuse_edit().
 * @return as diffuse_edit() (without the mask cases); DIFFUSE_ERR_UNSUPPORTED
 *         for an inpainting model (9-channel UNet), which diffusers' img2img
 *         pipeline does not run either.
 * Ownership: free *out_images with diffuse_images_free().
 * Thread-safety: one thread per context at a time. Since 0.1.
 */
DIFFUSE_API diffuse_status diffuse_variation(diffuse_ctx *ctx, const diffuse_variation_params *params,
                                             diffuse_images **out_images);

/* ------------------------------------------------------------------------ */
/* Memory estimates                                                          */
/* ------------------------------------------------------------------------ */

/** Which call a memory estimate is for. */
typedef enum diffuse_operation {
    DIFFUSE_OP_GENERATE = 0,
    DIFFUSE_OP_EDIT = 1,
    DIFFUSE_OP_VARIATION = 2
} diffuse_operation;

/** Settings of the call to estimate. Fill with diffuse_memory_query_init(). Since 0.3. */
typedef struct diffuse_memory_query {
    uint32_t struct_size;         /**< set by init */
    diffuse_operation operation;  /**< default GENERATE */
    uint32_t width;               /**< output (or input image) pixels; 0 = model's native size */
    uint32_t height;              /**< 0 = model's native size */
    uint32_t n_images;            /**< 1..16; default 1 */
    /** > 1 (default 7.5) estimates a run with classifier-free guidance */
    float guidance_scale;
    diffuse_pixel_format format;  /**< format of the returned images; default RGB8 */
    /** default AUTO (estimated as the CPU); CUDA: the arena and the
     *  weights' device copy in device_bytes (since 0.4; before, NO_DEVICE) */
    diffuse_device device;
    uint64_t memory_budget;       /**< the context's memory_budget; 0 = none */
} diffuse_memory_query;

/** Result of diffuse_estimate_memory(). Set struct_size before the call. Since 0.3. */
typedef struct diffuse_memory_estimate {
    uint32_t struct_size;         /**< caller sets sizeof(diffuse_memory_estimate) */
    uint64_t model_host_bytes;    /**< the loaded model (diffuse_model_info.host_bytes) */
    /** the context's working memory (arena) for this call: kept by the
     *  context afterwards and reused by its next calls */
    uint64_t context_host_bytes;
    uint64_t run_host_bytes;      /**< temporary buffers of the call (latents, decoded floats) */
    uint64_t output_bytes;        /**< the returned images */
    /** peak host memory of a process that loads the model and makes this
     *  call: the sum of the four above */
    uint64_t host_bytes;
    /** device memory (0 on the CPU): on CUDA the arena plus the upper
     *  bound of the weights' device copy (since 0.4) */
    uint64_t device_bytes;
    int32_t vae_tiled;            /**< 1: the VAE runs in tiles at these settings */
    /** 0: the call would fail with DIFFUSE_ERR_OUT_OF_MEMORY under
     *  memory_budget (context_host_bytes is then what it would need) */
    int32_t fits;
} diffuse_memory_estimate;

/**
 * diffuse_memory_query_init() - fill @query with defaults. Accepts NULL.
 * Thread-safety: any thread. Since 0.3.
 */
DIFFUSE_API void diffuse_memory_query_init(diffuse_memory_query *query);

/**
 * diffuse_estimate_memory() - memory a call with @query's settings needs,
 *        computed from the same plan the call makes (nothing runs). On the
 *        CPU, host_bytes is within 10 % of the peak resident memory a
 *        process adds by loading the model and making the call (tested),
 *        not counting the process's own libraries, thread stacks and the
 *        BLAS library's per-thread buffers (a few MiB per thread).
 * @return DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (NULL pointers, a
 *         struct_size too small, sizes that are not multiples of the VAE
 *         scale factor or too small for the model, n_images out of range,
 *         an unknown enum); DIFFUSE_ERR_UNSUPPORTED (a model that cannot
 *         run, or an operation it cannot run, e.g. variation with an
 *         inpainting UNet); DIFFUSE_ERR_NO_DEVICE (device CUDA: this
 *         version has no GPU backend to estimate).
 * Thread-safety: any thread. Since 0.3.
 */
DIFFUSE_API diffuse_status diffuse_estimate_memory(const diffuse_model *model, const diffuse_memory_query *query,
                                                   diffuse_memory_estimate *estimate);

/* ------------------------------------------------------------------------ */
/* Devices                                                                   */
/* ------------------------------------------------------------------------ */

/** One device a context can run on. Set struct_size before a call. Since 0.3. */
typedef struct diffuse_device_info {
    uint32_t struct_size;         /**< caller sets sizeof(diffuse_device_info) */
    diffuse_device device;        /**< CPU or CUDA */
    int32_t index;                /**< ordinal within its kind (0 for the CPU) */
    int32_t available;            /**< 1: a context can run on it now */
    char name[128];               /**< e.g. the CPU model name; NUL-terminated */
    uint64_t memory_bytes;        /**< total memory (host RAM for the CPU) */
    uint32_t threads;             /**< CPU: cores the library would use; 0 for GPUs */
    /** why it is unavailable, or how it was found; NUL-terminated */
    char note[256];
} diffuse_device_info;

/**
 * diffuse_list_devices() - the devices this library can use on this host:
 *        the CPU first, then one entry per GPU the CUDA backend module
 *        reports. When the module or the driver is missing, one CUDA entry
 *        with available 0 says which in its note.
 * @out: caller array of @capacity entries, each with struct_size set (may be
 *        NULL when capacity is 0).
 * @count: receives the number of entries (may exceed capacity; only the
 *        first @capacity are written).
 * @return DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (NULL count, out NULL with
 *         capacity > 0, a struct_size too small).
 * Thread-safety: any thread. Since 0.3.
 */
DIFFUSE_API diffuse_status diffuse_list_devices(diffuse_device_info *out, size_t capacity, size_t *count);

/**
 * diffuse_ctx_get_device() - what a context asked for and what it got.
 * @requested: receives the device of its diffuse_ctx_params (may be NULL).
 * @info: receives the device it runs on, struct_size set by the caller (may
 *        be NULL); with AUTO on a host without a usable GPU this is the CPU.
 * @return DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT.
 * Thread-safety: any thread. Since 0.3.
 */
DIFFUSE_API diffuse_status diffuse_ctx_get_device(const diffuse_ctx *ctx, diffuse_device *requested,
                                                  diffuse_device_info *info);

/** Memory a context holds, from diffuse_ctx_get_memory(). Set struct_size
 *  before the call. Since 0.4. */
typedef struct diffuse_ctx_memory {
    uint32_t struct_size;         /**< caller sets sizeof(diffuse_ctx_memory) */
    diffuse_device device;        /**< CPU or CUDA: where the context runs */
    uint64_t memory_budget;       /**< its diffuse_ctx_params memory_budget; 0 = none */
    /** host working memory (the arena) it keeps between calls; 0 on CUDA,
     *  whose arena is device memory */
    uint64_t host_bytes;
    /** CUDA: device memory it holds now, as allocated: its arena and its
     *  copy of the weights (uploaded on first use); 0 on the CPU. The CUDA
     *  context itself and the cuBLAS/cuDNN handles' own memory are not
     *  counted. */
    uint64_t device_bytes;
    /** CUDA: the most device memory it has held at once (as device_bytes);
     *  with a memory_budget this stays within it */
    uint64_t device_peak_bytes;
} diffuse_ctx_memory;

/**
 * diffuse_ctx_get_memory() - the memory @ctx holds and has held.
 * @out: struct_size set by the caller; filled up to it.
 * Memory budget on CUDA: a context's memory_budget bounds all the device
 * memory the context allocates (device_peak_bytes): its arena plus its
 * weights, counted at their upper bound before the first run so that a run
 * that would not fit fails with DIFFUSE_ERR_OUT_OF_MEMORY before it starts
 * (after the VAE was planned in tiles to fit, as on the CPU).
 * @return DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (NULL, struct_size too
 *         small); DIFFUSE_ERR_BUSY (a call or job runs on @ctx: ask between
 *         calls).
 * Thread-safety: any thread. Since 0.4.
 */
DIFFUSE_API diffuse_status diffuse_ctx_get_memory(diffuse_ctx *ctx, diffuse_ctx_memory *out);

/* ------------------------------------------------------------------------ */
/* Asynchronous jobs                                                         */
/* ------------------------------------------------------------------------ */

/*
 * A job runs one generate/edit/variation call on a worker thread the library
 * starts, so a host's frame loop never blocks: start -> poll or wait ->
 * result -> free, with cancel at any point. Polling needs no callback (hosts
 * that allow only static callbacks, such as Unity IL2CPP, just poll).
 *
 * One job (or blocking call) per context at a time: while a job of a context
 * is queued or running, starting another job and the blocking calls
 * diffuse_generate/edit/variation on that context return DIFFUSE_ERR_BUSY at
 * once, without waiting. The context is free again as soon as the job has
 * finished (poll reports DONE, FAILED or CANCELLED), even before the job is
 * freed. While the job runs, its worker thread calls the context's progress
 * and log callbacks; the context's last error belongs to the job until it
 * finishes, then holds the job's message (also kept by
 * diffuse_job_last_error()).
 *
 * The job functions may be called from any thread, and poll, wait, cancel
 * and last_error concurrently with each other; diffuse_job_result and
 * diffuse_job_free from one thread at a time. Since 0.2.
 */

/** An asynchronous generate/edit/variation call. Since 0.2. */
typedef struct diffuse_job diffuse_job;

/** Where a job stands. Since 0.2. */
typedef enum diffuse_job_state {
    DIFFUSE_JOB_QUEUED = 0,   /**< started; the worker has not begun the run */
    DIFFUSE_JOB_RUNNING = 1,  /**< the run is in progress */
    DIFFUSE_JOB_DONE = 2,     /**< finished with DIFFUSE_OK; images await diffuse_job_result */
    DIFFUSE_JOB_FAILED = 3,   /**< finished with an error status (diffuse_job_result) */
    DIFFUSE_JOB_CANCELLED = 4 /**< finished with DIFFUSE_CANCELLED */
} diffuse_job_state;

/** Snapshot filled by diffuse_job_poll(). Grows at the end only. Since 0.2. */
typedef struct diffuse_job_status {
    uint32_t struct_size;    /**< caller sets sizeof(diffuse_job_status) */
    diffuse_job_state state;
    diffuse_stage stage;     /**< stage of the latest progress report (LOAD before the first) */
    uint32_t step;           /**< as diffuse_progress: steps done in this stage */
    uint32_t total;          /**< steps in this stage */
    uint32_t image_index;    /**< image being worked on */
    uint32_t image_count;    /**< images requested */
    double elapsed_seconds;  /**< since the run started, at the latest report */
} diffuse_job_status;

/** diffuse_job_wait() timeout that never expires. Since 0.2. */
#define DIFFUSE_WAIT_FOREVER 0xFFFFFFFFu

/**
 * diffuse_job_start_generate() - start diffuse_generate() on a worker thread.
 * @params: checked now, as diffuse_generate() checks it, and copied with the
 *        strings it points to: the host may change or free them as soon as
 *        this returns.
 * @out_job: receives the job; NULL on failure.
 * @return DIFFUSE_OK (the job is QUEUED or already RUNNING);
 *         DIFFUSE_ERR_BUSY (a job or call is in progress on @ctx; nothing is
 *         started and the context's last error is not changed);
 *         DIFFUSE_ERR_INVALID_ARGUMENT (NULL pointers, or the params errors
 *         of diffuse_generate(), message in diffuse_ctx_last_error());
 *         DIFFUSE_ERR_UNSUPPORTED (as diffuse_generate());
 *         DIFFUSE_ERR_OUT_OF_MEMORY; DIFFUSE_ERR_INTERNAL (no thread could
 *         be started). Errors of the run itself arrive through the job.
 * Ownership: free the job with diffuse_job_free(). @ctx must outlive the
 *         job's run: see diffuse_ctx_free().
 * Thread-safety: as other calls on @ctx. Since 0.2.
 */
DIFFUSE_API diffuse_status diffuse_job_start_generate(diffuse_ctx *ctx, const diffuse_generate_params *params,
                                                      diffuse_job **out_job);

/**
 * diffuse_job_start_edit() - start diffuse_edit() on a worker thread.
 * @params: checked now and copied with the prompts, the image and the mask
 *        (their pixels included): the host may free them once this returns.
 * @return as diffuse_job_start_generate(), with the params errors of
 *         diffuse_edit().
 * Ownership, thread-safety: as diffuse_job_start_generate(). Since 0.2.
 */
DIFFUSE_API diffuse_status diffuse_job_start_edit(diffuse_ctx *ctx, const diffuse_edit_params *params,
                                                  diffuse_job **out_job);

/**
 * diffuse_job_start_variation() - start diffuse_variation() on a worker thread.
 * @params: checked now and copied with the prompts and the image (its pixels
 *        included): the host may free them once this returns.
 * @return as diffuse_job_start_generate(), with the params errors of
 *         diffuse_variation().
 * Ownership, thread-safety: as diffuse_job_start_generate(). Since 0.2.
 */
DIFFUSE_API diffuse_status diffuse_job_start_variation(diffuse_ctx *ctx, const diffuse_variation_params *params,
                                                       diffuse_job **out_job);

/**
 * diffuse_job_poll() - where the job stands, without blocking.
 * @out: caller-owned; set out->struct_size first; fields beyond it are not
 *        written.
 * @return DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (NULL job or out, or
 *         struct_size too small).
 * Thread-safety: any thread, concurrently with the run. Since 0.2.
 */
DIFFUSE_API diffuse_status diffuse_job_poll(const diffuse_job *job, diffuse_job_status *out);

/**
 * diffuse_job_wait() - block until the job has finished or @timeout_ms
 *        milliseconds have passed (0: just check; DIFFUSE_WAIT_FOREVER: no limit).
 * @return DIFFUSE_OK when the job has finished (DONE, FAILED or CANCELLED:
 *         the run's own status comes from diffuse_job_result());
 *         DIFFUSE_ERR_TIMEOUT when it has not;
 *         DIFFUSE_ERR_INVALID_ARGUMENT (NULL job).
 * Thread-safety: any thread; several threads may wait. Since 0.2.
 */
DIFFUSE_API diffuse_status diffuse_job_wait(diffuse_job *job, uint32_t timeout_ms);

/**
 * diffuse_job_cancel() - ask the job to stop. Returns at once; the run stops
 *        at its next progress point (within one denoising step, or before
 *        the VAE pass when cancelled just before it) and the job ends
 *        CANCELLED, its context usable. A job that has already finished
 *        keeps its state. Calling it more than once is harmless.
 * @return DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (NULL job).
 * Thread-safety: any thread, any time before diffuse_job_free(). Since 0.2.
 */
DIFFUSE_API diffuse_status diffuse_job_cancel(diffuse_job *job);

/**
 * diffuse_job_result() - the outcome of a finished job.
 * @out_images: receives the images of a DONE job the first time it is asked
 *        for them; NULL otherwise (failed, cancelled, not finished, or
 *        already taken).
 * @return the run's status (DIFFUSE_OK, DIFFUSE_CANCELLED, or the errors of
 *         the blocking call; the message is in diffuse_job_last_error());
 *         DIFFUSE_ERR_BUSY when the job has not finished yet;
 *         DIFFUSE_ERR_INVALID_ARGUMENT (NULL job or out_images).
 * Ownership: the images move to the caller once; free them with
 *         diffuse_images_free().
 * Thread-safety: any thread, one at a time per job. Since 0.2.
 */
DIFFUSE_API diffuse_status diffuse_job_result(diffuse_job *job, diffuse_images **out_images);

/**
 * diffuse_job_last_error() - message of a finished job that failed or was
 *        cancelled.
 * @return a NUL-terminated string owned by the job, valid until
 *         diffuse_job_free(); "" while the job runs and after success; a
 *         static message for a NULL job. Never NULL.
 * Thread-safety: any thread. Since 0.2.
 */
DIFFUSE_API const char *diffuse_job_last_error(const diffuse_job *job);

/**
 * diffuse_job_free() - release a job. Accepts NULL. A job still queued or
 *        running is cancelled first and its worker joined (this blocks for
 *        at most about one step). Images not taken with diffuse_job_result()
 *        are freed.
 * Thread-safety: any thread; no other call on the job may run or follow.
 *         Since 0.2.
 */
DIFFUSE_API void diffuse_job_free(diffuse_job *job);

/* ------------------------------------------------------------------------ */
/* Previews                                                                  */
/* ------------------------------------------------------------------------ */

/**
 * Preview callback (diffuse_ctx_set_preview). Called on the thread that runs
 * the call (for a job, its worker thread), at DENOISE steps, before the
 * progress callback. @preview is a small RGB8 sRGB top-left image of the
 * current sample at latent size (the output size / the VAE scale factor,
 * e.g. 64x64 for 512x512 SD), for image @progress->image_index; it and its
 * pixels are valid only during the call. Must not call back into the
 * library with the same context; return quickly. Since 0.2.
 */
typedef void (*diffuse_preview_fn)(const diffuse_image *preview, const diffuse_progress *progress, void *user);

/**
 * diffuse_ctx_set_preview() - deliver a preview every @every_k_steps
 *        denoising steps (steps k, 2k, ... and the last) of the context's
 *        calls and jobs.
 * The preview is a cheap linear projection of the latent sample (each latent
 * pixel's channels times a (channels x 3) matrix plus a bias, then
 * round(clamp(v / 2 + 0.5) * 255)), not a VAE decode. The projection is
 * fitted for the context's model the first time a preview is set: the
 * model's VAE decodes 4 fixed 8x8 latents (seeded normal noise with standard
 * deviations 1, 2, 4 and 8) and a least-squares fit maps each latent pixel
 * (plus a constant 1) to the mean RGB of the pixel block it decodes to.
 * That costs one small VAE decode once per context (a fraction of a second
 * for SD on a CPU; it does not count against memory_budget) and makes
 * previews deterministic. The preview shows the current sample, which early
 * in denoising is mostly noise; it approximates the decoded colours only as
 * well as a linear map can.
 * @fn: NULL turns previews off (@user and @every_k_steps are then ignored).
 * @every_k_steps: 1.. (1 = every step).
 * @return DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (NULL ctx, @fn with
 *         @every_k_steps 0); DIFFUSE_ERR_BUSY (a job or call is running on
 *         the context); DIFFUSE_ERR_UNSUPPORTED (a model that cannot run, or
 *         more than 16 latent channels); DIFFUSE_ERR_OUT_OF_MEMORY.
 * Thread-safety: as other calls on @ctx. Since 0.2.
 */
DIFFUSE_API diffuse_status diffuse_ctx_set_preview(diffuse_ctx *ctx, diffuse_preview_fn fn, void *user,
                                                   uint32_t every_k_steps);

/**
 * diffuse_ctx_set_preview_decode() - at preview steps (see
 *        diffuse_ctx_set_preview) that are multiples of @every_k_steps, and
 *        at the last step, make the preview a full VAE decode of the
 *        denoised estimate (the clean latents the sampler's current sample
 *        and the guided model output imply, diffusers'
 *        pred_original_sample) instead of the cheap projection: the image
 *        is the output size, RGB8 sRGB top-left, and shows what the picture
 *        would roughly be if denoising stopped there. Other preview steps
 *        keep the projection. Each such preview costs one VAE
 *        decode (about as much as the final one) on the calling thread, and
 *        is cancelled with the run. The callback and its interval are set
 *        with diffuse_ctx_set_preview(); without one this has no effect
 *        until one is set.
 * @every_k_steps: 0 (default) = never decode; else 1..
 * @return DIFFUSE_OK; DIFFUSE_ERR_INVALID_ARGUMENT (NULL ctx);
 *         DIFFUSE_ERR_BUSY (a job or call is running on the context).
 * Thread-safety: as other calls on @ctx. Since 0.3.
 */
DIFFUSE_API diffuse_status diffuse_ctx_set_preview_decode(diffuse_ctx *ctx, uint32_t every_k_steps);

#ifdef __cplusplus
}
#endif

#endif /* DIFFUSE_H */
