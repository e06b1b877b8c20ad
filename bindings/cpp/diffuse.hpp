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
//  - A moved-from or default-constructed object is empty: destroying it is
//    fine, and its other members throw diffuse::Error (INVALID_ARGUMENT).
#ifndef DIFFUSE_HPP
#define DIFFUSE_HPP

#include <diffuse.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
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
// Progress reports, on the thread running the call. Return false to cancel;
// an exception thrown here cancels the run and is rethrown by the call.
using ProgressFn = std::function<bool(const diffuse_progress &)>;

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

// A loaded checkpoint: a diffusers folder or a single-file .safetensors.
class Model {
public:
    Model() noexcept = default;
    // Loads @path; throws Error with the status (NOT_FOUND, MODEL_FORMAT, ...)
    // and the library's message. @log receives messages during the load.
    explicit Model(const std::string &path, LogFn log = {}, diffuse_log_level level = DIFFUSE_LOG_WARN) {
        struct LoadLog {
            LogFn *fn;
            std::exception_ptr error;
        } ll{&log, nullptr};
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
        if (state_->error) { // the log callback threw: no half-made object
            diffuse_ctx_free(std::exchange(ctx_, nullptr));
            std::rethrow_exception(std::exchange(state_->error, nullptr));
        }
        if (st != DIFFUSE_OK) detail::throw_status(st, state_->last_error_log);
    }
    ~Context() { diffuse_ctx_free(ctx_); }
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
    // From any thread: the run in progress (or the next one) stops within a
    // step and throws Cancelled.
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

private:
    // Callback state, on the heap so its address survives moves.
    struct State {
        ProgressFn progress;
        LogFn log;
        std::atomic<bool> cancel{false};
        std::exception_ptr error;   // thrown inside a callback, rethrown by the call
        std::string last_error_log; // ERROR-level message (context creation has no ctx to ask)
    };

    static int progress_trampoline(const diffuse_progress *p, void *user) {
        auto *s = static_cast<State *>(user);
        if (s->cancel.load() || s->error) return 1;
        if (!s->progress) return 0;
        try {
            return s->progress(*p) ? 0 : 1;
        } catch (...) {
            s->error = std::current_exception();
            return 1;
        }
    }

    static void log_trampoline(diffuse_log_level level, const char *message, void *user) {
        auto *s = static_cast<State *>(user);
        try {
            if (level == DIFFUSE_LOG_ERROR) s->last_error_log = message;
            if (s->log) s->log(level, message);
        } catch (...) {
            if (!s->error) s->error = std::current_exception();
        }
    }

    diffuse_ctx *checked() const {
        if (!ctx_) detail::throw_empty("diffuse::Context");
        return ctx_;
    }

    template <class Call> Images run(Call &&call) {
        diffuse_ctx *c = checked();
        state_->error = nullptr;
        diffuse_images *out = nullptr;
        const diffuse_status st = call(c, &out);
        state_->cancel.store(false);
        Images images(out);
        if (state_->error) std::rethrow_exception(std::exchange(state_->error, nullptr));
        if (st != DIFFUSE_OK) detail::throw_status(st, diffuse_ctx_last_error(c));
        return images;
    }

    std::shared_ptr<diffuse_model> model_; // keeps the model alive while the context lives
    std::unique_ptr<State> state_;
    diffuse_ctx *ctx_ = nullptr;
};

} // namespace diffuse

#endif // DIFFUSE_HPP
