// diffuse.hpp - header-only C++17 wrappers over the libdiffuse C ABI
// (diffuse.h): RAII handles that free what they own, exceptions that carry
// the library's status and message, fluent parameter builders, and progress
// callbacks as std::function. Link with libdiffuse (pkg-config diffuse).
//
// Ownership and threads follow the C ABI:
//  - diffuse::Model is a shared, immutable handle: copies share one loaded
//    model, any thread may use it, and it lives while any copy or any
//    Context made from it does.
//  - diffuse::Context is one execution state: move-only, one thread at a
//    time; only cancel() may be called from another thread.
//  - diffuse::Images owns returned pixels: move-only, freed on destruction.
//  - diffuse::Job is an asynchronous run (Context::start_generate/...):
//    move-only; poll(), wait() and cancel() from any thread; result() once
//    it has finished; destroying a running job cancels it and joins its
//    worker (about one step). The library copies a job's parameters
//    (strings and input pixels) at the start.
//  - A moved-from or default-constructed object is empty: destroying it is
//    fine, and its other members throw diffuse::Error (INVALID_ARGUMENT).
//  - output_images (since 0.3) are caller memory the library writes into:
//    keep them alive until the call returns, or for a job until it has
//    finished.
#ifndef DIFFUSE_HPP
#define DIFFUSE_HPP

#include <diffuse.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace diffuse {

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

// A failed call: the diffuse_status and the library's message.
class Error : public std::runtime_error {
public:
    Error(diffuse_status status, const std::string &message)
        : std::runtime_error(message.empty() ? std::string(diffuse_status_string(status)) : message),
          status_(status) {}
    diffuse_status status() const noexcept { return status_; }
    const char *status_string() const noexcept { return diffuse_status_string(status_); }

private:
    diffuse_status status_;
};

// A run stopped by Context::cancel() or by a progress callback returning
// false (status DIFFUSE_CANCELLED). The context stays usable.
class Cancelled : public Error {
public:
    using Error::Error;
};

namespace detail {
[[noreturn]] inline void throw_status(diffuse_status status, const std::string &message) {
    if (status == DIFFUSE_CANCELLED) throw Cancelled(status, message);
    throw Error(status, message);
}

[[noreturn]] inline void throw_empty(const char *what) {
    throw Error(DIFFUSE_ERR_INVALID_ARGUMENT,
                std::string(what) + " is empty (default-constructed or moved from)");
}
} // namespace detail

// "MAJOR.MINOR.PATCH" of the library actually loaded.
inline std::string version() { return diffuse_version_string(); }

// Log messages: level and text (valid during the call only).
using LogFn = std::function<void(diffuse_log_level, const char *)>;
// Progress reports, on the thread running the call (a job's worker thread
// for jobs). Return false to cancel; an exception thrown here cancels the
// run and is rethrown by the call (by Job::result() for a job).
using ProgressFn = std::function<bool(const diffuse_progress &)>;
// Previews (Context::set_preview): a small RGB8 image of the current sample
// at latent size and the step's progress, both valid during the call only.
// Runs where ProgressFn runs; an exception thrown here cancels the run and is
// rethrown as a ProgressFn's is.
using PreviewFn = std::function<void(const diffuse_image &, const diffuse_progress &)>;

// A view of caller-owned 8-bit pixels for edit/variation inputs. The library
// only reads them; they must stay alive until the call returns.
inline diffuse_image image_view(uint32_t width, uint32_t height, diffuse_pixel_format format, const uint8_t *data,
                                uint32_t stride = 0) {
    diffuse_image im{};
    im.width = width;
    im.height = height;
    im.stride = stride ? stride : width * (format == DIFFUSE_PIXEL_RGB8 ? 3u : 4u);
    im.format = format;
    im.origin = DIFFUSE_ORIGIN_TOP_LEFT;
    im.color_space = DIFFUSE_COLOR_SRGB;
    im.data = const_cast<uint8_t *>(data); // read only: diffuse_image is shared with outputs
    return im;
}

// ---------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------

// Images returned by a run. Move-only; frees the library's memory.
class Images {
public:
    Images() noexcept = default;
    explicit Images(diffuse_images *images) noexcept : p_(images) {}
    ~Images() { diffuse_images_free(p_); }
    Images(Images &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    Images &operator=(Images &&o) noexcept {
        if (this != &o) {
            diffuse_images_free(p_);
            p_ = std::exchange(o.p_, nullptr);
        }
        return *this;
    }
    Images(const Images &) = delete;
    Images &operator=(const Images &) = delete;

    std::size_t size() const noexcept { return p_ ? p_->count : 0; }
    bool empty() const noexcept { return size() == 0; }
    // Image @i (unchecked); pixels stay valid while this object owns them.
    const diffuse_image &operator[](std::size_t i) const noexcept { return p_->images[i]; }
    const diffuse_image &at(std::size_t i) const {
        if (i >= size()) throw std::out_of_range("diffuse::Images::at: index out of range");
        return p_->images[i];
    }
    // Seed that produced image @i (the run's seed + i).
    uint64_t seed(std::size_t i) const {
        if (i >= size()) throw std::out_of_range("diffuse::Images::seed: index out of range");
        return p_->seeds[i];
    }
    const diffuse_image *begin() const noexcept { return p_ ? p_->images : nullptr; }
    const diffuse_image *end() const noexcept { return p_ ? p_->images + p_->count : nullptr; }
    diffuse_images *get() const noexcept { return p_; }
    // Gives up ownership: free the result with diffuse_images_free().
    diffuse_images *release() noexcept { return std::exchange(p_, nullptr); }

private:
    diffuse_images *p_ = nullptr;
};

// ---------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------

// Settings of a call to estimate (diffuse_memory_query with its library
// defaults and fluent setters; since 0.3).
class MemoryQuery {
public:
    MemoryQuery() { diffuse_memory_query_init(&q_); }
    MemoryQuery &operation(diffuse_operation op) { q_.operation = op; return *this; }
    // 0 = the model's native size
    MemoryQuery &size(uint32_t width, uint32_t height) { q_.width = width; q_.height = height; return *this; }
    MemoryQuery &n_images(uint32_t n) { q_.n_images = n; return *this; }
    MemoryQuery &guidance_scale(float g) { q_.guidance_scale = g; return *this; }
    MemoryQuery &format(diffuse_pixel_format f) { q_.format = f; return *this; }
    MemoryQuery &device(diffuse_device d) { q_.device = d; return *this; }
    MemoryQuery &memory_budget(uint64_t bytes) { q_.memory_budget = bytes; return *this; }
    diffuse_memory_query &raw() noexcept { return q_; }
    const diffuse_memory_query &c_query() const noexcept { return q_; }

private:
    diffuse_memory_query q_;
};

// A loaded checkpoint: a diffusers folder or a single-file .safetensors.
class Model {
public:
    Model() noexcept = default;
    // Loads @path; throws Error with the status (NOT_FOUND, MODEL_FORMAT, ...)
    // and the library's message. @log receives messages during the load.
    // @progress (since 0.3) receives stage LOAD reports as the weight files
    // are read, on this thread; returning false cancels the load (Cancelled
    // is thrown), and an exception it throws cancels it and is rethrown.
    explicit Model(const std::string &path, LogFn log = {}, diffuse_log_level level = DIFFUSE_LOG_WARN,
                   ProgressFn progress = {}) {
        struct LoadLog {
            LogFn *fn;
            std::exception_ptr error;
            ProgressFn *progress;
        } ll{&log, nullptr, &progress};
        std::string message(2048, '\0');
        diffuse_model_params mp;
        diffuse_model_params_init(&mp);
        mp.error_buf = &message[0];
        mp.error_buf_size = message.size();
        if (log) {
            mp.log_fn = [](diffuse_log_level lv, const char *msg, void *user) {
                auto *l = static_cast<LoadLog *>(user);
                try {
                    (*l->fn)(lv, msg);
                } catch (...) {
                    if (!l->error) l->error = std::current_exception();
                }
            };
            mp.log_user = &ll;
            mp.log_level = level;
        }
        if (progress) {
            mp.progress_fn = [](const diffuse_progress *p, void *user) -> int {
                auto *l = static_cast<LoadLog *>(user);
                if (l->error) return 1;
                try {
                    return (*l->progress)(*p) ? 0 : 1;
                } catch (...) {
                    l->error = std::current_exception();
                    return 1;
                }
            };
            mp.progress_user = &ll;
        }
        diffuse_model *m = nullptr;
        const diffuse_status st = diffuse_model_load(path.c_str(), &mp, &m);
        if (st == DIFFUSE_OK) m_.reset(m, diffuse_model_free);
        if (ll.error) std::rethrow_exception(ll.error);
        if (st != DIFFUSE_OK) detail::throw_status(st, message.c_str());
    }

    explicit operator bool() const noexcept { return static_cast<bool>(m_); }
    const diffuse_model *get() const noexcept { return m_.get(); }

    // Family, component sizes and native size (diffuse_model_get_info).
    diffuse_model_info info() const {
        diffuse_model_info mi{};
        mi.struct_size = sizeof mi;
        const diffuse_status st = diffuse_model_get_info(checked(), &mi);
        if (st != DIFFUSE_OK) detail::throw_status(st, "diffuse_model_get_info failed");
        return mi;
    }

    // Memory a call with @query's settings needs (diffuse_estimate_memory,
    // since 0.3); nothing runs. Throws Error: INVALID_ARGUMENT (sizes,
    // counts), UNSUPPORTED, NO_DEVICE (CUDA).
    diffuse_memory_estimate estimate_memory(const MemoryQuery &query = MemoryQuery()) const;

    // CLIP token ids of @text with start and end tokens (diffuse_tokenize).
    std::vector<int32_t> tokenize(const std::string &text) const {
        std::size_t count = 0;
        diffuse_status st = diffuse_tokenize(checked(), text.c_str(), nullptr, 0, &count);
        std::vector<int32_t> ids(count);
        if (st == DIFFUSE_OK && count) st = diffuse_tokenize(get(), text.c_str(), ids.data(), ids.size(), &count);
        if (st != DIFFUSE_OK) detail::throw_status(st, "diffuse_tokenize failed for this text");
        ids.resize(count);
        return ids;
    }

private:
    friend class Context;
    const diffuse_model *checked() const {
        if (!m_) detail::throw_empty("diffuse::Model");
        return m_.get();
    }
    std::shared_ptr<diffuse_model> m_;
};

inline diffuse_memory_estimate Model::estimate_memory(const MemoryQuery &query) const {
    diffuse_memory_estimate e{};
    e.struct_size = sizeof e;
    const diffuse_status st = diffuse_estimate_memory(checked(), &query.c_query(), &e);
    if (st != DIFFUSE_OK) detail::throw_status(st, "diffuse_estimate_memory failed for these settings");
    return e;
}

// ---------------------------------------------------------------------------
// Devices (since 0.3)
// ---------------------------------------------------------------------------

// The devices this library can use here (diffuse_list_devices): the CPU
// first, then one entry per GPU; without a CUDA module or driver, one CUDA
// entry with available 0 whose note says why.
inline std::vector<diffuse_device_info> list_devices() {
    std::vector<diffuse_device_info> out(4);
    for (;;) {
        for (auto &d : out) {
            d = diffuse_device_info{};
            d.struct_size = sizeof d;
        }
        std::size_t count = 0;
        const diffuse_status st = diffuse_list_devices(out.data(), out.size(), &count);
        if (st != DIFFUSE_OK) detail::throw_status(st, "diffuse_list_devices failed");
        if (count <= out.size()) {
            out.resize(count);
            return out;
        }
        out.resize(count);
    }
}

// What a context asked for and what it runs on (Context::device()).
struct ContextDevice {
    diffuse_device requested;  // the ContextOptions device (AUTO, CPU, CUDA)
    diffuse_device_info info;  // the device it runs on
};

// ---------------------------------------------------------------------------
// Parameters: the C structs with their library defaults, fluent setters and
// owned strings. raw() reaches fields without a setter.
// ---------------------------------------------------------------------------

class GenerateParams {
public:
    GenerateParams() { diffuse_generate_params_init(&p_); }
    explicit GenerateParams(std::string prompt) : GenerateParams() { prompt_ = std::move(prompt); }
    GenerateParams &prompt(std::string s) { prompt_ = std::move(s); return *this; }
    GenerateParams &negative_prompt(std::string s) { negative_ = std::move(s); return *this; }
    GenerateParams &n_images(uint32_t n) { p_.n_images = n; return *this; }
    GenerateParams &size(uint32_t width, uint32_t height) { p_.width = width; p_.height = height; return *this; }
    GenerateParams &steps(uint32_t n) { p_.steps = n; return *this; }
    GenerateParams &guidance_scale(float g) { p_.guidance_scale = g; return *this; }
    GenerateParams &guidance_rescale(float g) { p_.guidance_rescale = g; return *this; }
    GenerateParams &sampler(diffuse_sampler s) { p_.sampler = s; return *this; }
    GenerateParams &seed(uint64_t s) { p_.seed = s; return *this; }
    GenerateParams &clip_skip(uint32_t n) { p_.clip_skip = n; return *this; }
    GenerateParams &output(diffuse_pixel_format f, diffuse_row_origin o = DIFFUSE_ORIGIN_TOP_LEFT,
                           diffuse_color_space c = DIFFUSE_COLOR_SRGB) {
        p_.output = {f, o, c};
        return *this;
    }
    GenerateParams &tiling(bool x, bool y) { p_.tile_x = x; p_.tile_y = y; return *this; }
    // Since 0.3: n_images caller images (exactly the output size) that
    // receive the results; their format is used. See the note at the top.
    GenerateParams &output_images(diffuse_image *images) { p_.output_images = images; return *this; }
    // The struct itself; prompt and negative_prompt set here are replaced
    // by the strings above when the call is made.
    diffuse_generate_params &raw() noexcept { return p_; }
    // The struct to pass to diffuse_generate; valid while *this lives.
    diffuse_generate_params c_params() const {
        diffuse_generate_params p = p_;
        p.prompt = prompt_.c_str();
        p.negative_prompt = negative_.c_str();
        return p;
    }

private:
    diffuse_generate_params p_;
    std::string prompt_, negative_;
};

class EditParams {
public:
    EditParams() { diffuse_edit_params_init(&p_); }
    // @image: RGBA8/BGRA8 whose alpha 0 marks the part to repaint, or any
    // format with mask(). Pixels must stay alive until the call returns.
    EditParams(const diffuse_image &image, std::string prompt) : EditParams() {
        image_ = image;
        prompt_ = std::move(prompt);
    }
    EditParams &image(const diffuse_image &im) { image_ = im; return *this; }
    // Mask of the image's size: white = repaint.
    EditParams &mask(const diffuse_image &m) { mask_ = m; return *this; }
    EditParams &prompt(std::string s) { prompt_ = std::move(s); return *this; }
    EditParams &negative_prompt(std::string s) { negative_ = std::move(s); return *this; }
    EditParams &n_images(uint32_t n) { p_.n_images = n; return *this; }
    EditParams &steps(uint32_t n) { p_.steps = n; return *this; }
    EditParams &guidance_scale(float g) { p_.guidance_scale = g; return *this; }
    EditParams &strength(float s) { p_.strength = s; return *this; }
    EditParams &sampler(diffuse_sampler s) { p_.sampler = s; return *this; }
    EditParams &seed(uint64_t s) { p_.seed = s; return *this; }
    EditParams &mask_feather(float px) { p_.mask_feather = px; return *this; }
    // Since 0.3: as GenerateParams::output_images (the image's size).
    EditParams &output_images(diffuse_image *images) { p_.output_images = images; return *this; }
    diffuse_edit_params &raw() noexcept { return p_; }
    diffuse_edit_params c_params() const {
        diffuse_edit_params p = p_;
        p.image = image_ ? &*image_ : nullptr;
        p.mask = mask_ ? &*mask_ : nullptr;
        p.prompt = prompt_.c_str();
        p.negative_prompt = negative_.c_str();
        return p;
    }

private:
    diffuse_edit_params p_;
    std::optional<diffuse_image> image_, mask_;
    std::string prompt_, negative_;
};

class VariationParams {
public:
    VariationParams() { diffuse_variation_params_init(&p_); }
    explicit VariationParams(const diffuse_image &image) : VariationParams() { image_ = image; }
    VariationParams &image(const diffuse_image &im) { image_ = im; return *this; }
    // Optional; "" (the default) = unconditional.
    VariationParams &prompt(std::string s) { prompt_ = std::move(s); return *this; }
    VariationParams &negative_prompt(std::string s) { negative_ = std::move(s); return *this; }
    VariationParams &n_images(uint32_t n) { p_.n_images = n; return *this; }
    VariationParams &steps(uint32_t n) { p_.steps = n; return *this; }
    VariationParams &guidance_scale(float g) { p_.guidance_scale = g; return *this; }
    VariationParams &strength(float s) { p_.strength = s; return *this; }
    VariationParams &sampler(diffuse_sampler s) { p_.sampler = s; return *this; }
    VariationParams &seed(uint64_t s) { p_.seed = s; return *this; }
    // Since 0.3: as GenerateParams::output_images (the image's size).
    VariationParams &output_images(diffuse_image *images) { p_.output_images = images; return *this; }
    diffuse_variation_params &raw() noexcept { return p_; }
    diffuse_variation_params c_params() const {
        diffuse_variation_params p = p_;
        p.image = image_ ? &*image_ : nullptr;
        p.prompt = prompt_.c_str();
        p.negative_prompt = negative_.c_str();
        return p;
    }

private:
    diffuse_variation_params p_;
    std::optional<diffuse_image> image_;
    std::string prompt_, negative_;
};

// ---------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------

// True when @s is DONE, FAILED or CANCELLED.
inline bool finished(const diffuse_job_status &s) noexcept {
    return s.state == DIFFUSE_JOB_DONE || s.state == DIFFUSE_JOB_FAILED || s.state == DIFFUSE_JOB_CANCELLED;
}

namespace detail {
// What a Context shares with its callbacks and its jobs; on the heap (shared)
// so its address survives moves and a Job may outlive its Context object.
struct CallbackState {
    ProgressFn progress;
    PreviewFn preview;
    LogFn log;
    std::atomic<bool> cancel{false};
    std::string last_error_log; // ERROR-level message (context creation has no ctx to ask)

    // The first exception a callback threw in the current run, rethrown by the
    // call or Job::result(). Guarded: a job's worker sets it while the host
    // thread may start (and be refused) another run.
    void set_error(std::exception_ptr e) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!error_) error_ = std::move(e);
    }
    bool has_error() {
        std::lock_guard<std::mutex> lock(mu_);
        return static_cast<bool>(error_);
    }
    std::exception_ptr take_error() {
        std::lock_guard<std::mutex> lock(mu_);
        return std::exchange(error_, nullptr);
    }

private:
    std::mutex mu_;
    std::exception_ptr error_;
};
} // namespace detail

// An asynchronous generate/edit/variation (diffuse_job). Move-only; made by
// Context::start_generate/start_edit/start_variation. Polling needs no
// callback. Errors throw Error (Cancelled for DIFFUSE_CANCELLED).
class Job {
public:
    Job() noexcept = default;
    ~Job() { diffuse_job_free(j_); } // cancels and joins a running job
    Job(Job &&o) noexcept : j_(std::exchange(o.j_, nullptr)), state_(std::move(o.state_)) {}
    Job &operator=(Job &&o) noexcept {
        if (this != &o) {
            diffuse_job_free(j_);
            j_ = std::exchange(o.j_, nullptr);
            state_ = std::move(o.state_);
        }
        return *this;
    }
    Job(const Job &) = delete;
    Job &operator=(const Job &) = delete;

    explicit operator bool() const noexcept { return j_ != nullptr; }
    diffuse_job *get() const noexcept { return j_; }

    // Where the job stands, without blocking (state, stage, step, total, ...).
    diffuse_job_status poll() const {
        diffuse_job_status s{};
        s.struct_size = sizeof s;
        const diffuse_status st = diffuse_job_poll(checked(), &s);
        if (st != DIFFUSE_OK) detail::throw_status(st, "diffuse_job_poll failed");
        return s;
    }
    // DONE, FAILED or CANCELLED.
    bool finished() const { return diffuse::finished(poll()); }
    // Blocks until the job has finished (true) or @timeout has passed (false).
    bool wait(std::chrono::milliseconds timeout) {
        const auto ms = timeout.count() < 0 ? 0 : timeout.count();
        const uint32_t t = ms >= static_cast<long long>(DIFFUSE_WAIT_FOREVER) ? DIFFUSE_WAIT_FOREVER - 1
                                                                              : static_cast<uint32_t>(ms);
        return wait_ms(t);
    }
    // Blocks until the job has finished.
    void wait() { wait_ms(DIFFUSE_WAIT_FOREVER); }
    // From any thread: the run stops within one step and result() throws
    // Cancelled. Harmless on a finished job and when repeated.
    void cancel() {
        const diffuse_status st = diffuse_job_cancel(checked());
        if (st != DIFFUSE_OK) detail::throw_status(st, "diffuse_job_cancel failed");
    }
    // The images of a finished job, once (the second call gives empty
    // Images). Throws Error(DIFFUSE_ERR_BUSY) while it runs (wait() first),
    // Cancelled when cancelled, Error with the library's message when the run
    // failed, or rethrows the exception a progress/preview callback threw.
    Images result() {
        diffuse_job *j = checked();
        diffuse_images *out = nullptr;
        const diffuse_status st = diffuse_job_result(j, &out);
        Images images(out);
        if (st == DIFFUSE_ERR_BUSY) detail::throw_status(st, "the job has not finished yet");
        if (state_) {
            state_->cancel.store(false); // a Context::cancel() that stopped this job is used up
            if (std::exception_ptr e = state_->take_error()) std::rethrow_exception(e);
        }
        if (st != DIFFUSE_OK) detail::throw_status(st, diffuse_job_last_error(j));
        return images;
    }
    // Message of a failed or cancelled job ("" while it runs, after success,
    // and for an empty Job).
    const char *last_error() const noexcept { return j_ ? diffuse_job_last_error(j_) : ""; }

private:
    friend class Context;
    Job(diffuse_job *j, std::shared_ptr<detail::CallbackState> state) noexcept : j_(j), state_(std::move(state)) {}
    diffuse_job *checked() const {
        if (!j_) detail::throw_empty("diffuse::Job");
        return j_;
    }
    bool wait_ms(uint32_t ms) {
        const diffuse_status st = diffuse_job_wait(checked(), ms);
        if (st == DIFFUSE_ERR_TIMEOUT) return false;
        if (st != DIFFUSE_OK) detail::throw_status(st, "diffuse_job_wait failed");
        return true;
    }

    diffuse_job *j_ = nullptr;
    std::shared_ptr<detail::CallbackState> state_; // callback exceptions of this run
};

// ---------------------------------------------------------------------------
// Context
// ---------------------------------------------------------------------------

// Options for a Context (diffuse_ctx_params without the callbacks).
struct ContextOptions {
    diffuse_device device = DIFFUSE_DEVICE_AUTO;
    int32_t device_index = 0;
    int32_t n_threads = 0; // CPU threads; 0 = all cores
    diffuse_precision precision = DIFFUSE_PRECISION_AUTO;
    uint64_t memory_budget = 0; // device bytes; 0 = no limit
    LogFn log;                  // on the thread using the context
    diffuse_log_level log_level = DIFFUSE_LOG_WARN;
};

// One execution state. Move-only; one thread at a time, except cancel().
// One call or job at a time: while a job runs, starting another job or a
// blocking call throws Error(DIFFUSE_ERR_BUSY) at once.
class Context {
public:
    Context() noexcept = default;
    // Throws Error: NO_DEVICE (cuda asked, none usable), UNSUPPORTED, ...
    explicit Context(const Model &model, ContextOptions options = {}) : model_(model.m_), state_(new State) {
        if (!model_) detail::throw_empty("diffuse::Model");
        state_->log = std::move(options.log);
        diffuse_ctx_params cp;
        diffuse_ctx_params_init(&cp);
        cp.device = options.device;
        cp.device_index = options.device_index;
        cp.n_threads = options.n_threads;
        cp.precision = options.precision;
        cp.memory_budget = options.memory_budget;
        cp.log_fn = &Context::log_trampoline;
        cp.log_user = state_.get();
        cp.log_level = options.log_level;
        cp.progress_fn = &Context::progress_trampoline;
        cp.progress_user = state_.get(); // State never moves: moving a Context moves the pointer
        const diffuse_status st = diffuse_ctx_create(model_.get(), &cp, &ctx_);
        if (std::exception_ptr e = state_->take_error()) { // the log callback threw: no half-made object
            diffuse_ctx_free(std::exchange(ctx_, nullptr));
            std::rethrow_exception(e);
        }
        if (st != DIFFUSE_OK) detail::throw_status(st, state_->last_error_log);
    }
    ~Context() { diffuse_ctx_free(ctx_); } // cancels a running job and waits for its worker
    Context(Context &&o) noexcept
        : model_(std::move(o.model_)), state_(std::move(o.state_)), ctx_(std::exchange(o.ctx_, nullptr)) {}
    Context &operator=(Context &&o) noexcept {
        if (this != &o) {
            diffuse_ctx_free(ctx_); // before the model it was made from
            ctx_ = std::exchange(o.ctx_, nullptr);
            state_ = std::move(o.state_);
            model_ = std::move(o.model_);
        }
        return *this;
    }
    Context(const Context &) = delete;
    Context &operator=(const Context &) = delete;

    explicit operator bool() const noexcept { return ctx_ != nullptr; }
    diffuse_ctx *get() const noexcept { return ctx_; }

    // Progress reports for the following runs (set it between runs).
    void on_progress(ProgressFn fn) {
        checked();
        state_->progress = std::move(fn);
    }
    // Previews every @every_k_steps denoising steps of the following runs and
    // jobs (diffuse_ctx_set_preview); an empty @fn turns them off. Throws
    // Error: BUSY while a job or call runs, INVALID_ARGUMENT for k = 0.
    void set_preview(PreviewFn fn, uint32_t every_k_steps = 1) {
        diffuse_ctx *c = checked();
        const diffuse_status st = diffuse_ctx_set_preview(c, fn ? &Context::preview_trampoline : nullptr,
                                                          fn ? state_.get() : nullptr, fn ? every_k_steps : 0);
        if (st != DIFFUSE_OK) detail::throw_status(st, st == DIFFUSE_ERR_BUSY ? "a job or call is running on this context"
                                                                              : diffuse_ctx_last_error(c));
        state_->preview = std::move(fn); // no run is using it: the library just said so
    }
    // Since 0.3: every @every_k_steps-th denoising step (k, 2k, ... and the
    // last), the preview is a full VAE decode of the current sample's
    // denoised estimate (output size) instead of the cheap projection;
    // 0 turns it off (diffuse_ctx_set_preview_decode). Throws Error: BUSY
    // while a job or call runs.
    void set_preview_decode(uint32_t every_k_steps) {
        diffuse_ctx *c = checked();
        const diffuse_status st = diffuse_ctx_set_preview_decode(c, every_k_steps);
        if (st != DIFFUSE_OK) detail::throw_status(st, st == DIFFUSE_ERR_BUSY ? "a job or call is running on this context"
                                                                              : diffuse_ctx_last_error(c));
    }
    // Since 0.3: the device asked for and the one the context runs on
    // (diffuse_ctx_get_device; with AUTO and no usable GPU, the CPU).
    ContextDevice device() const {
        ContextDevice d{};
        d.info.struct_size = sizeof d.info;
        const diffuse_status st = diffuse_ctx_get_device(checked(), &d.requested, &d.info);
        if (st != DIFFUSE_OK) detail::throw_status(st, "diffuse_ctx_get_device failed");
        return d;
    }
    // Since 0.4: the memory the context holds and the most device memory it
    // has held (diffuse_ctx_get_memory). Throws Error BUSY while a job or
    // call runs on it.
    diffuse_ctx_memory memory() const {
        diffuse_ctx_memory m{};
        m.struct_size = sizeof m;
        const diffuse_status st = diffuse_ctx_get_memory(checked(), &m);
        if (st != DIFFUSE_OK)
            detail::throw_status(st, st == DIFFUSE_ERR_BUSY ? "a job or call is running on this context"
                                                            : "diffuse_ctx_get_memory failed");
        return m;
    }
    // From any thread: the run or job in progress (or the next one) stops
    // within a step and throws Cancelled (from Job::result() for a job).
    void cancel() noexcept {
        if (state_) state_->cancel.store(true);
    }
    // Message of the last failed call ("" after a success).
    const char *last_error() const noexcept { return ctx_ ? diffuse_ctx_last_error(ctx_) : ""; }

    // Text to image. Throws Error (Cancelled when cancelled).
    Images generate(const GenerateParams &params) {
        const diffuse_generate_params p = params.c_params();
        return run([&](diffuse_ctx *c, diffuse_images **out) { return diffuse_generate(c, &p, out); });
    }
    // Repaints the masked or transparent part of an image.
    Images edit(const EditParams &params) {
        const diffuse_edit_params p = params.c_params();
        return run([&](diffuse_ctx *c, diffuse_images **out) { return diffuse_edit(c, &p, out); });
    }
    // Variations of an image.
    Images variation(const VariationParams &params) {
        const diffuse_variation_params p = params.c_params();
        return run([&](diffuse_ctx *c, diffuse_images **out) { return diffuse_variation(c, &p, out); });
    }

    // generate() as an asynchronous job: returns at once. Throws Error: BUSY
    // when a job or call runs on this context, the params errors of generate().
    // The library copies @params; they may go away once this returns.
    Job start_generate(const GenerateParams &params) {
        const diffuse_generate_params p = params.c_params();
        return start([&](diffuse_ctx *c, diffuse_job **out) { return diffuse_job_start_generate(c, &p, out); });
    }
    // edit() as a job; the image and mask pixels are copied at the start.
    Job start_edit(const EditParams &params) {
        const diffuse_edit_params p = params.c_params();
        return start([&](diffuse_ctx *c, diffuse_job **out) { return diffuse_job_start_edit(c, &p, out); });
    }
    // variation() as a job; the image's pixels are copied at the start.
    Job start_variation(const VariationParams &params) {
        const diffuse_variation_params p = params.c_params();
        return start([&](diffuse_ctx *c, diffuse_job **out) { return diffuse_job_start_variation(c, &p, out); });
    }

private:
    using State = detail::CallbackState;

    static int progress_trampoline(const diffuse_progress *p, void *user) {
        auto *s = static_cast<State *>(user);
        if (s->cancel.load() || s->has_error()) return 1;
        if (!s->progress) return 0;
        try {
            return s->progress(*p) ? 0 : 1;
        } catch (...) {
            s->set_error(std::current_exception());
            return 1;
        }
    }

    static void preview_trampoline(const diffuse_image *image, const diffuse_progress *p, void *user) {
        auto *s = static_cast<State *>(user);
        if (!s->preview || s->has_error()) return;
        try {
            s->preview(*image, *p);
        } catch (...) {
            s->set_error(std::current_exception()); // the progress report that follows cancels the run
        }
    }

    static void log_trampoline(diffuse_log_level level, const char *message, void *user) {
        auto *s = static_cast<State *>(user);
        try {
            if (level == DIFFUSE_LOG_ERROR) s->last_error_log = message;
            if (s->log) s->log(level, message);
        } catch (...) {
            s->set_error(std::current_exception());
        }
    }

    diffuse_ctx *checked() const {
        if (!ctx_) detail::throw_empty("diffuse::Context");
        return ctx_;
    }

    template <class Call> Images run(Call &&call) {
        diffuse_ctx *c = checked();
        std::exception_ptr earlier = state_->take_error();
        diffuse_images *out = nullptr;
        const diffuse_status st = call(c, &out);
        Images images(out);
        if (st == DIFFUSE_ERR_BUSY) { // a job runs: its state (error, cancel) is left alone
            if (earlier) state_->set_error(earlier);
            detail::throw_status(st, "a job is running on this context");
        }
        state_->cancel.store(false);
        if (std::exception_ptr e = state_->take_error()) std::rethrow_exception(e);
        if (st != DIFFUSE_OK) detail::throw_status(st, diffuse_ctx_last_error(c));
        return images;
    }

    template <class Call> Job start(Call &&call) {
        diffuse_ctx *c = checked();
        // A fresh run starts without an earlier callback exception; it is put
        // back if the library refuses (BUSY: it then belongs to the running job).
        std::exception_ptr earlier = state_->take_error();
        diffuse_job *j = nullptr;
        const diffuse_status st = call(c, &j);
        if (st != DIFFUSE_OK) {
            if (earlier) state_->set_error(earlier);
            detail::throw_status(st, st == DIFFUSE_ERR_BUSY ? "a job or call is running on this context"
                                                            : diffuse_ctx_last_error(c));
        }
        return Job(j, state_);
    }

    std::shared_ptr<diffuse_model> model_; // keeps the model alive while the context lives
    std::shared_ptr<State> state_;         // shared with this context's jobs
    diffuse_ctx *ctx_ = nullptr;
};

} // namespace diffuse

#endif // DIFFUSE_HPP
