// test_cpp.cpp - tests of the C++ wrappers (bindings/cpp/diffuse.hpp) on the
// tiny test model: loading and its errors, generate with progress, cancel
// through every path (callback false, exception, cancel()), moved-from and
// empty objects, a context outliving its Model object, edit and variation,
// asynchronous jobs (diffuse::Job: poll/wait/cancel/result, BUSY, timeouts,
// callback exceptions) and previews; since 0.3 memory estimates, devices,
// decoded previews, output_images and load progress.
// Usage: test_cpp MODEL_DIR
#include <diffuse.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

static int failures = 0;

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (cond) {                                                              \
            std::printf("PASS: %s\n", #cond);                                    \
        } else {                                                                 \
            std::printf("FAIL: %s (%s:%d)\n", #cond, __FILE__, __LINE__);        \
            failures++;                                                          \
        }                                                                        \
    } while (0)

// Runs @f, expecting it to throw E; returns the exception's status or -1.
template <class E, class F> static int status_thrown(F &&f) {
    try {
        f();
    } catch (const E &e) {
        return static_cast<int>(e.status());
    } catch (...) {
        return -2;
    }
    return -1;
}

static bool same_pixels(const diffuse_image &a, const diffuse_image &b) {
    if (a.width != b.width || a.height != b.height || a.format != b.format) return false;
    for (uint32_t y = 0; y < a.height; y++)
        if (std::memcmp(a.data + std::size_t(y) * a.stride, b.data + std::size_t(y) * b.stride, a.width * 3) != 0)
            return false;
    return true;
}

static void test_model(const std::string &dir) {
    diffuse::Model model(dir);
    CHECK(model);
    CHECK(model.info().family == DIFFUSE_FAMILY_SD1);
    CHECK(model.tokenize("a photo of a cat").size() == 7);
    diffuse::Model copy = model; // shares the loaded model
    CHECK(copy.get() == model.get());
    CHECK(status_thrown<diffuse::Error>([&] { diffuse::Model bad(dir + "/no-such-model"); }) == DIFFUSE_ERR_NOT_FOUND);
    try {
        diffuse::Model bad(dir + "/no-such-model");
    } catch (const diffuse::Error &e) {
        CHECK(std::string(e.what()).find("no-such-model") != std::string::npos); // the library's message
    }
    int logged = 0;
    CHECK(status_thrown<diffuse::Error>([&] {
              diffuse::Model bad(dir + "/no-such-model", [&](diffuse_log_level, const char *) { logged++; });
          }) == DIFFUSE_ERR_NOT_FOUND);
    CHECK(logged > 0);
}

static void test_generate(diffuse::Context &ctx) {
    std::vector<uint32_t> steps;
    ctx.on_progress([&](const diffuse_progress &p) {
        if (p.stage == DIFFUSE_STAGE_DENOISE) steps.push_back(p.step);
        return true;
    });
    const auto params = diffuse::GenerateParams("a red circle").steps(2).seed(42).sampler(DIFFUSE_SAMPLER_EULER);
    diffuse::Images a = ctx.generate(params);
    CHECK(a.size() == 1);
    CHECK(a[0].width == 64 && a[0].height == 64 && a[0].format == DIFFUSE_PIXEL_RGB8);
    CHECK(a.seed(0) == 42);
    CHECK(steps.size() == 2 && steps.back() == 2);
    diffuse::Images b = ctx.generate(params);
    CHECK(same_pixels(a[0], b[0])); // same seed, same image
    int n = 0;
    for (const diffuse_image &im : b) n += im.width == 64;
    CHECK(n == 1);
    bool out_of_range = false;
    try {
        (void)b.at(1);
    } catch (const std::out_of_range &) {
        out_of_range = true;
    }
    CHECK(out_of_range);
    CHECK(status_thrown<diffuse::Error>([&] { ctx.generate(diffuse::GenerateParams("x").size(60, 64)); }) ==
          DIFFUSE_ERR_INVALID_ARGUMENT);
    CHECK(std::strlen(ctx.last_error()) > 0);
}

struct Boom {};

static std::string ctx_model_dir; // for test_jobs' second context

static void test_cancel(diffuse::Context &ctx) {
    const auto params = diffuse::GenerateParams("a blue square").steps(20).seed(1);
    ctx.on_progress([](const diffuse_progress &p) { return !(p.stage == DIFFUSE_STAGE_DENOISE && p.step >= 2); });
    CHECK(status_thrown<diffuse::Cancelled>([&] { ctx.generate(params); }) == DIFFUSE_CANCELLED);

    ctx.on_progress([](const diffuse_progress &p) -> bool {
        if (p.stage == DIFFUSE_STAGE_DENOISE) throw Boom{};
        return true;
    });
    bool boom = false;
    try {
        ctx.generate(params);
    } catch (const Boom &) {
        boom = true; // the callback's own exception, rethrown after the run stopped
    }
    CHECK(boom);

    ctx.on_progress({});
    ctx.cancel(); // before the run: the next run stops at its first report
    CHECK(status_thrown<diffuse::Cancelled>([&] { ctx.generate(params); }) == DIFFUSE_CANCELLED);
    diffuse::Images ok = ctx.generate(diffuse::GenerateParams("a blue square").steps(1)); // flag was reset
    CHECK(ok.size() == 1);

    std::thread canceller;
    ctx.on_progress([&](const diffuse_progress &p) {
        if (p.stage == DIFFUSE_STAGE_DENOISE && p.step == 1 && !canceller.joinable())
            canceller = std::thread([&] { ctx.cancel(); }); // from another thread
        return true;
    });
    CHECK(status_thrown<diffuse::Cancelled>([&] { ctx.generate(params); }) == DIFFUSE_CANCELLED);
    if (canceller.joinable()) canceller.join();
    ctx.on_progress({});
}

static void test_moved_from(const std::string &dir) {
    diffuse::Model model(dir);
    diffuse::Model moved = std::move(model);
    CHECK(!model && moved);
    CHECK(status_thrown<diffuse::Error>([&] { model.info(); }) == DIFFUSE_ERR_INVALID_ARGUMENT);
    CHECK(status_thrown<diffuse::Error>([&] { diffuse::Context c(model); }) == DIFFUSE_ERR_INVALID_ARGUMENT);

    diffuse::Context ctx(moved);
    diffuse::Context other = std::move(ctx);
    CHECK(!ctx && other);
    CHECK(status_thrown<diffuse::Error>([&] { ctx.generate(diffuse::GenerateParams("x").steps(1)); }) ==
          DIFFUSE_ERR_INVALID_ARGUMENT);
    CHECK(std::strcmp(ctx.last_error(), "") == 0);
    ctx.cancel(); // harmless on an empty context

    diffuse::Images images = other.generate(diffuse::GenerateParams("x").steps(1));
    diffuse::Images taken = std::move(images);
    CHECK(images.size() == 0 && images.begin() == images.end() && taken.size() == 1);
    images = std::move(taken); // move-assign back
    CHECK(images.size() == 1 && taken.empty());

    diffuse::Context empty;
    empty = std::move(other); // move-assign into an empty context
    CHECK(empty && !other);
}

static void test_context_keeps_model(const std::string &dir) {
    diffuse::Context ctx;
    {
        diffuse::Model model(dir);
        diffuse::ContextOptions cpu;
        cpu.device = DIFFUSE_DEVICE_CPU;
        cpu.n_threads = 2;
        ctx = diffuse::Context(model, cpu);
    } // the Model object is gone; the context still holds the model
    CHECK(ctx.generate(diffuse::GenerateParams("a green star").steps(1)).size() == 1);
    diffuse::ContextOptions cuda;
    cuda.device = DIFFUSE_DEVICE_CUDA;
    diffuse::Model model(dir);
    const int st = status_thrown<diffuse::Error>([&] { diffuse::Context c(model, cuda); });
    std::printf("note: a CUDA context %s\n", st == -1 ? "was created" : diffuse_status_string(diffuse_status(st)));
    CHECK(st == -1 || st == DIFFUSE_ERR_NO_DEVICE);
}

// Edit and variation may still answer UNSUPPORTED while their pipelines are
// being finished; either outcome is accepted and printed.
static void test_edit_variation(diffuse::Context &ctx) {
    std::vector<uint8_t> rgba(64 * 64 * 4, 200);
    for (std::size_t i = 3; i < rgba.size(); i += 4) rgba[i] = (i / 4) % 64 < 32 ? 0 : 255; // left half: edit
    const diffuse_image im = diffuse::image_view(64, 64, DIFFUSE_PIXEL_RGBA8, rgba.data());
    const int e = status_thrown<diffuse::Error>([&] {
        diffuse::Images out = ctx.edit(diffuse::EditParams(im, "a red circle").steps(2).seed(3));
        if (out.size() != 1 || out[0].width != 64) throw diffuse::Error(DIFFUSE_ERR_INTERNAL, "bad edit result");
    });
    std::printf("note: edit %s\n", e == -1 ? "worked" : diffuse_status_string(diffuse_status(e)));
    CHECK(e == -1 || e == DIFFUSE_ERR_UNSUPPORTED);
    const int v = status_thrown<diffuse::Error>([&] {
        diffuse::Images out = ctx.variation(diffuse::VariationParams(im).steps(2).n_images(2).strength(0.5f));
        if (out.size() != 2) throw diffuse::Error(DIFFUSE_ERR_INTERNAL, "bad variation result");
    });
    std::printf("note: variation %s\n", v == -1 ? "worked" : diffuse_status_string(diffuse_status(v)));
    CHECK(v == -1 || v == DIFFUSE_ERR_UNSUPPORTED);
    CHECK(status_thrown<diffuse::Error>([&] { ctx.edit(diffuse::EditParams().prompt("no image")); }) ==
          DIFFUSE_ERR_INVALID_ARGUMENT);
}

static_assert(!std::is_copy_constructible<diffuse::Job>::value && std::is_nothrow_move_constructible<diffuse::Job>::value,
              "diffuse::Job is move-only");

// Polls (1 ms frames) until the job denoises at @step or has finished.
static diffuse_job_status poll_until_step(const diffuse::Job &job, uint32_t step) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    diffuse_job_status s = job.poll();
    while (!diffuse::finished(s) && !(s.stage == DIFFUSE_STAGE_DENOISE && s.step >= step) &&
           std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        s = job.poll();
    }
    return s;
}

template <class F> static bool throws_boom(F &&f) {
    try {
        f();
    } catch (const Boom &) {
        return true;
    } catch (...) {
    }
    return false;
}

static void test_jobs(diffuse::Context &ctx) {
    const auto params =
        diffuse::GenerateParams("a red cube").steps(3).seed(77).n_images(2).sampler(DIFFUSE_SAMPLER_EULER);
    diffuse::Images ref = ctx.generate(params);

    // start -> poll -> result, with the params gone right after the start
    diffuse::Job job;
    {
        auto temp = diffuse::GenerateParams(std::string("a red cube"))
                        .steps(3)
                        .seed(77)
                        .n_images(2)
                        .sampler(DIFFUSE_SAMPLER_EULER);
        job = ctx.start_generate(temp);
    } // temp (and its strings) destroyed: the library copied them
    CHECK(job);
    diffuse_job_status s = job.poll();
    int polls = 1;
    while (!diffuse::finished(s)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        s = job.poll();
        polls++;
    }
    std::printf("note: job finished after %d polls\n", polls);
    CHECK(s.state == DIFFUSE_JOB_DONE && s.stage == DIFFUSE_STAGE_DECODE && s.image_count == 2);
    CHECK(job.finished() && job.wait(std::chrono::milliseconds(0)));
    diffuse::Images got = job.result();
    CHECK(got.size() == 2 && same_pixels(got[0], ref[0]) && same_pixels(got[1], ref[1]) && got.seed(1) == 78);
    CHECK(job.result().size() == 0); // the images move out once
    CHECK(std::strcmp(job.last_error(), "") == 0);

    // move-only; a moved-from job throws instead of crashing
    diffuse::Job moved = std::move(job);
    CHECK(!job && moved);
    CHECK(status_thrown<diffuse::Error>([&] { job.poll(); }) == DIFFUSE_ERR_INVALID_ARGUMENT);
    CHECK(status_thrown<diffuse::Error>([&] { job.wait(); }) == DIFFUSE_ERR_INVALID_ARGUMENT);
    CHECK(status_thrown<diffuse::Error>([&] { job.cancel(); }) == DIFFUSE_ERR_INVALID_ARGUMENT);
    CHECK(status_thrown<diffuse::Error>([&] { job.result(); }) == DIFFUSE_ERR_INVALID_ARGUMENT);
    CHECK(std::strcmp(job.last_error(), "") == 0);

    // busy, timeout, cancel
    const auto long_params =
        diffuse::GenerateParams("a blue square").steps(1000).guidance_scale(1.0f).sampler(DIFFUSE_SAMPLER_EULER);
    const auto noop_preview = [](const diffuse_image &, const diffuse_progress &) {};
    {
        diffuse::Job running = ctx.start_generate(long_params);
        s = poll_until_step(running, 1);
        CHECK(s.state == DIFFUSE_JOB_RUNNING);
        CHECK(status_thrown<diffuse::Error>([&] { ctx.start_generate(params); }) == DIFFUSE_ERR_BUSY);
        CHECK(status_thrown<diffuse::Error>([&] { ctx.generate(params); }) == DIFFUSE_ERR_BUSY);
        CHECK(status_thrown<diffuse::Error>([&] { ctx.set_preview(noop_preview); }) == DIFFUSE_ERR_BUSY);
        CHECK(status_thrown<diffuse::Error>([&] { running.result(); }) == DIFFUSE_ERR_BUSY);
        const auto t0 = std::chrono::steady_clock::now();
        CHECK(!running.wait(std::chrono::milliseconds(50)));
        CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(45));
        CHECK(running.poll().state == DIFFUSE_JOB_RUNNING); // untouched by the refused calls
        running.cancel();
        running.wait();
        s = running.poll();
        CHECK(s.state == DIFFUSE_JOB_CANCELLED && s.step < s.total);
        CHECK(status_thrown<diffuse::Cancelled>([&] { running.result(); }) == DIFFUSE_CANCELLED);
        CHECK(std::strlen(running.last_error()) > 0);
        running.cancel(); // harmless after the end
    }
    {
        diffuse::Job running = ctx.start_generate(long_params);
        poll_until_step(running, 1);
        ctx.cancel(); // Context::cancel() reaches the job too
        CHECK(running.wait(std::chrono::seconds(30)));
        CHECK(status_thrown<diffuse::Cancelled>([&] { running.result(); }) == DIFFUSE_CANCELLED);
    }
    {
        diffuse::Job running = ctx.start_generate(long_params);
        poll_until_step(running, 1);
    } // destroyed while running: cancelled and joined
    CHECK(ctx.generate(diffuse::GenerateParams("x").steps(1)).size() == 1); // the context is free again

    // a progress callback's exception cancels the job and comes out of result()
    ctx.on_progress([](const diffuse_progress &p) -> bool {
        if (p.stage == DIFFUSE_STAGE_DENOISE && p.step == 2) throw Boom{};
        return true;
    });
    {
        diffuse::Job j = ctx.start_generate(long_params);
        j.wait();
        CHECK(throws_boom([&] { j.result(); }) && j.poll().state == DIFFUSE_JOB_CANCELLED);
    }
    ctx.on_progress({});

    // previews every 2 steps, on the job's worker thread
    std::vector<std::string> previews;
    std::vector<std::thread::id> threads;
    ctx.set_preview(
        [&](const diffuse_image &im, const diffuse_progress &p) {
            previews.push_back(std::to_string(im.width) + "x" + std::to_string(im.height) + "/" +
                               std::to_string(p.step));
            threads.push_back(std::this_thread::get_id());
        },
        2);
    {
        diffuse::Job j =
            ctx.start_generate(diffuse::GenerateParams("a red circle").steps(5).sampler(DIFFUSE_SAMPLER_EULER));
        j.wait();
        CHECK(j.result().size() == 1);
    }
    std::string seen;
    for (const auto &p : previews) seen += p + " ";
    std::printf("note: previews (size/step) %s\n", seen.c_str());
    CHECK(seen == "32x32/2 32x32/4 32x32/5 "); // tiny-sd1: 64x64 images, VAE scale 2
    bool on_worker = !threads.empty();
    for (auto id : threads) on_worker = on_worker && id != std::this_thread::get_id();
    CHECK(on_worker);
    ctx.set_preview([](const diffuse_image &, const diffuse_progress &) { throw Boom{}; }, 1);
    {
        diffuse::Job j = ctx.start_generate(long_params);
        j.wait();
        CHECK(throws_boom([&] { j.result(); }) && j.poll().state == DIFFUSE_JOB_CANCELLED);
    }
    CHECK(throws_boom([&] { ctx.generate(params); })); // blocking calls rethrow it too
    ctx.set_preview({});
    previews.clear();
    CHECK(ctx.generate(diffuse::GenerateParams("x").steps(2)).size() == 1 && previews.empty());
    CHECK(status_thrown<diffuse::Error>([&] { ctx.set_preview(noop_preview, 0); }) == DIFFUSE_ERR_INVALID_ARGUMENT);

    // edit and variation jobs give the blocking calls' images
    std::vector<uint8_t> rgb(64 * 64 * 3);
    for (std::size_t i = 0; i < rgb.size(); i++) rgb[i] = uint8_t(i * 7);
    std::vector<uint8_t> mask(64 * 64 * 3, 0);
    std::fill(mask.begin(), mask.begin() + mask.size() / 2, uint8_t(255));
    const diffuse_image im = diffuse::image_view(64, 64, DIFFUSE_PIXEL_RGB8, rgb.data());
    const diffuse_image mk = diffuse::image_view(64, 64, DIFFUSE_PIXEL_RGB8, mask.data());
    const auto ep = diffuse::EditParams(im, "a green leaf").mask(mk).steps(2).seed(5);
    diffuse::Images eref = ctx.edit(ep);
    diffuse::Job ej = ctx.start_edit(ep);
    ej.wait();
    diffuse::Images eout = ej.result();
    CHECK(eout.size() == 1 && same_pixels(eout[0], eref[0]));
    const auto vp = diffuse::VariationParams(im).steps(4).strength(0.5f).seed(6);
    diffuse::Images vref = ctx.variation(vp);
    diffuse::Job vj = ctx.start_variation(vp);
    vj.wait();
    diffuse::Images vout = vj.result();
    CHECK(vout.size() == 1 && same_pixels(vout[0], vref[0]));

    // a Context destroyed under its running job: the job ends CANCELLED
    diffuse::Job orphan;
    {
        diffuse::Context other{diffuse::Model(ctx_model_dir)};
        orphan = other.start_generate(long_params);
        poll_until_step(orphan, 1);
    }
    CHECK(orphan.wait(std::chrono::seconds(30)) && orphan.poll().state == DIFFUSE_JOB_CANCELLED);
    CHECK(status_thrown<diffuse::Cancelled>([&] { orphan.result(); }) == DIFFUSE_CANCELLED);
}

static void test_v03(const std::string &dir, const diffuse::Model &model, diffuse::Context &ctx) {
    // Model info: dtype and host bytes.
    const diffuse_model_info info = model.info();
    const uint64_t params = info.unet_parameters + info.vae_parameters + info.text_encoder_parameters;
    CHECK(info.weight_dtype == (info.weight_bytes > 3 * params ? DIFFUSE_WEIGHTS_F32 : DIFFUSE_WEIGHTS_F16) ||
          info.weight_dtype == DIFFUSE_WEIGHTS_BF16);
    CHECK(info.host_bytes >= 4 * params * 95 / 100 && info.host_bytes <= 4 * params * 105 / 100);

    // Memory estimates.
    const diffuse_memory_estimate e = model.estimate_memory(diffuse::MemoryQuery().size(64, 64));
    CHECK(e.host_bytes == e.model_host_bytes + e.context_host_bytes + e.run_host_bytes + e.output_bytes);
    CHECK(e.model_host_bytes == info.host_bytes && e.output_bytes == 64 * 64 * 3);
    CHECK(e.context_host_bytes > 0 && e.context_host_bytes < (512u << 20) && e.fits == 1 && e.device_bytes == 0);
    const diffuse_memory_estimate e4 = model.estimate_memory(
        diffuse::MemoryQuery().operation(DIFFUSE_OP_VARIATION).size(128, 128).n_images(4).format(DIFFUSE_PIXEL_RGBA8));
    CHECK(e4.output_bytes == 4 * 128 * 128 * 4 && e4.context_host_bytes > e.context_host_bytes);
    CHECK(model.estimate_memory(diffuse::MemoryQuery().memory_budget(1u << 20)).fits == 0);
    CHECK(status_thrown<diffuse::Error>([&] { model.estimate_memory(diffuse::MemoryQuery().size(33, 64)); }) ==
          DIFFUSE_ERR_INVALID_ARGUMENT);

    // Devices.
    const std::vector<diffuse_device_info> devices = diffuse::list_devices();
    CHECK(devices.size() >= 2 && devices[0].device == DIFFUSE_DEVICE_CPU && devices[0].available == 1);
    CHECK(std::strlen(devices[0].name) > 0 && devices[0].memory_bytes > 0 && devices[0].threads >= 1);
    bool gpu = false, cuda_entry = false;
    for (const auto &d : devices)
        if (d.device == DIFFUSE_DEVICE_CUDA) {
            cuda_entry = true;
            gpu = gpu || d.available;
            if (!d.available) CHECK(std::strlen(d.note) > 0); // says why
        }
    CHECK(cuda_entry);
    if (!gpu) {
        diffuse::ContextOptions cuda;
        cuda.device = DIFFUSE_DEVICE_CUDA;
        CHECK(status_thrown<diffuse::Error>([&] { diffuse::Context c(model, cuda); }) == DIFFUSE_ERR_NO_DEVICE);
    }
    const diffuse::ContextDevice cd = ctx.device(); // an AUTO context
    CHECK(cd.requested == DIFFUSE_DEVICE_AUTO && cd.info.device == (gpu ? DIFFUSE_DEVICE_CUDA : DIFFUSE_DEVICE_CPU));
    {
        diffuse::ContextOptions one;
        one.device = DIFFUSE_DEVICE_CPU;
        one.n_threads = 1;
        diffuse::Context c1(model, one);
        // Since 0.4: the context's memory (its host arena after a call).
        c1.generate(diffuse::GenerateParams("a red circle").steps(1).size(32, 32));
        const diffuse_ctx_memory mem = c1.memory();
        CHECK(mem.device == DIFFUSE_DEVICE_CPU && mem.host_bytes > 0 && mem.device_bytes == 0 &&
              mem.device_peak_bytes == 0 && mem.memory_budget == 0);
        const diffuse::ContextDevice d1 = c1.device();
        CHECK(d1.requested == DIFFUSE_DEVICE_CPU && d1.info.device == DIFFUSE_DEVICE_CPU && d1.info.threads == 1);
        CHECK(std::strcmp(d1.info.name, devices[0].name) == 0);
    }

    // Decoded previews: steps 2, 4 and the last at output size, others at latent size.
    ctx.on_progress({});
    std::vector<std::pair<uint32_t, uint32_t>> previews; // (step, width)
    ctx.set_preview([&](const diffuse_image &im, const diffuse_progress &p) { previews.emplace_back(p.step, im.width); },
                    1);
    ctx.set_preview_decode(2);
    const auto five =
        diffuse::GenerateParams("a red circle").size(64, 64).steps(5).seed(1).guidance_scale(1.0f).sampler(DIFFUSE_SAMPLER_EULER);
    ctx.generate(five);
    const uint32_t small = 64 / info.vae_scale_factor;
    const std::vector<std::pair<uint32_t, uint32_t>> want{{1, small}, {2, 64}, {3, small}, {4, 64}, {5, 64}};
    CHECK(previews == want);
    previews.clear();
    ctx.set_preview_decode(0);
    ctx.generate(five);
    CHECK(previews.size() == 5 && std::all_of(previews.begin(), previews.end(), [&](auto &p) { return p.second == small; }));
    ctx.set_preview({});

    // output_images: the library writes into caller memory, same pixels.
    diffuse::Images ref = ctx.generate(five);
    std::vector<uint8_t> buf(64 * 200, 7); // rows of 200 bytes: a row-strided RGB image
    diffuse_image out = diffuse::image_view(64, 64, DIFFUSE_PIXEL_RGB8, buf.data(), 200);
    diffuse::GenerateParams into = five;
    into.output_images(&out);
    diffuse::Images got = ctx.generate(into);
    CHECK(got.size() == 1 && got[0].data == buf.data() && same_pixels(got[0], ref[0]));
    CHECK(buf[192] == 7 && buf[199] == 7); // bytes between rows are not written

    // Load progress, and cancelling a load.
    std::vector<uint32_t> load_steps;
    {
        diffuse::Model m(dir, {}, DIFFUSE_LOG_WARN, [&](const diffuse_progress &p) {
            if (p.stage == DIFFUSE_STAGE_LOAD) load_steps.push_back(p.step);
            return true;
        });
        CHECK(m && !load_steps.empty() && load_steps.back() >= 3);
    }
    CHECK(status_thrown<diffuse::Cancelled>([&] {
              diffuse::Model m(dir, {}, DIFFUSE_LOG_WARN, [](const diffuse_progress &p) { return p.step < 1; });
          }) == DIFFUSE_CANCELLED);
    bool boom = false;
    try {
        diffuse::Model m(dir, {}, DIFFUSE_LOG_WARN, [](const diffuse_progress &) -> bool { throw Boom{}; });
    } catch (Boom) {
        boom = true;
    }
    CHECK(boom);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
        return 2;
    }
    const std::string dir = argv[1];
    try {
        test_model(dir);
        diffuse::Model model(dir);
        diffuse::Context ctx(model);
        test_generate(ctx);
        test_cancel(ctx);
        test_edit_variation(ctx);
        ctx_model_dir = dir;
        test_jobs(ctx);
        test_v03(dir, model, ctx);
        test_moved_from(dir);
        test_context_keeps_model(dir);
    } catch (const std::exception &e) {
        std::printf("FAIL: unexpected exception: %s\n", e.what());
        failures++;
    }
    std::printf("test_cpp: %d failed\n", failures);
    return failures != 0;
}
