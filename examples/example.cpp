// example.cpp - the C++ example: libdiffuse through bindings/cpp/diffuse.hpp.
// Loads a model, generates two images with a progress callback, prints what
// came back and optionally writes the first as a PPM file; errors arrive as
// diffuse::Error exceptions carrying the library's status and message.
// Usage: example_cpp MODEL [--steps N] [-o OUT.ppm]
#include <diffuse.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>

namespace {

struct Args {
    std::string model, out;
    unsigned steps = 10;
};

bool parse(int argc, char **argv, Args &a) {
    for (int i = 1; i < argc; i++) {
        const bool value = i + 1 < argc;
        if (std::strcmp(argv[i], "--steps") == 0 && value) a.steps = static_cast<unsigned>(std::atoi(argv[++i]));
        else if (std::strcmp(argv[i], "-o") == 0 && value) a.out = argv[++i];
        else if (argv[i][0] != '-' && a.model.empty()) a.model = argv[i];
        else return false;
    }
    return !a.model.empty();
}

// Binary PPM: the simplest image file, fine for an example (RGB8 input).
void write_ppm(const std::string &path, const diffuse_image &im) {
    std::ofstream f(path, std::ios::binary);
    f << "P6\n" << im.width << ' ' << im.height << "\n255\n";
    for (uint32_t y = 0; y < im.height; y++)
        f.write(reinterpret_cast<const char *>(im.data + std::size_t(y) * im.stride), std::streamsize(im.width) * 3);
    if (!f) throw std::runtime_error("cannot write " + path);
}

double mean_value(const diffuse_image &im) {
    double sum = 0;
    for (uint32_t y = 0; y < im.height; y++)
        for (uint32_t x = 0; x < im.width * 3; x++) sum += im.data[std::size_t(y) * im.stride + x];
    return sum / (double(im.width) * im.height * 3);
}

} // namespace

int main(int argc, char **argv) {
    Args args;
    if (!parse(argc, argv, args)) {
        std::cerr << "usage: " << argv[0] << " MODEL [--steps N] [-o OUT.ppm]\n";
        return 2;
    }
    try {
        diffuse::Model model(args.model);
        const diffuse_model_info info = model.info();
        std::cout << "libdiffuse " << diffuse::version() << ", model " << args.model << ": native size "
                  << info.sample_size * info.vae_scale_factor << ", "
                  << model.tokenize("a small red circle on the left").size() << " prompt tokens\n";

        diffuse::Context ctx(model); // device auto
        ctx.on_progress([](const diffuse_progress &p) {
            if (p.stage == DIFFUSE_STAGE_DENOISE && p.step == p.total)
                std::cout << "image " << p.image_index + 1 << "/" << p.image_count << ": " << p.total
                          << " steps in " << p.elapsed_seconds << " s\n";
            return true; // false would cancel: generate() then throws diffuse::Cancelled
        });
        diffuse::Images images = ctx.generate(
            diffuse::GenerateParams("a small red circle on the left").steps(args.steps).seed(42).n_images(2));
        for (std::size_t i = 0; i < images.size(); i++)
            std::cout << "image " << i << ": " << images[i].width << "x" << images[i].height << ", seed "
                      << images.seed(i) << ", mean value " << mean_value(images[i]) << "\n";
        if (!args.out.empty()) {
            write_ppm(args.out, images[0]);
            std::cout << "wrote " << args.out << "\n";
        }

        try { // what a failure looks like
            diffuse::Model missing(args.model + "/no-such-model");
        } catch (const diffuse::Error &e) {
            std::cout << "expected failure: " << e.status_string() << ": " << e.what() << "\n";
        }
    } catch (const diffuse::Error &e) {
        std::cerr << "diffuse error (" << e.status_string() << "): " << e.what() << "\n";
        return 1;
    } catch (const std::exception &e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
