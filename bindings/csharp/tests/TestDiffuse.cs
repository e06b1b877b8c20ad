// TestDiffuse.cs - tests of the C# binding (bindings/csharp/Diffuse.cs) on
// the tiny-sd1 fixture model. Usage: TestDiffuse.exe MODEL_DIR
// Prints a PASS line per check; exits 1 on the first failure.
using System;
using System.IO;
using System.Runtime.InteropServices;
using System.Threading;
using System.Threading.Tasks;
using Diffuse;

internal static class TestDiffuse
{
    private static int passed;

    private static void Check(bool ok, string what)
    {
        if (!ok) throw new Exception("FAIL: " + what);
        Console.WriteLine("PASS " + what);
        passed++;
    }

    /// <summary>Calls Report on the reporting thread itself (System.Progress
    /// would post to the thread pool, too late to observe ordering).</summary>
    private sealed class SyncProgress : IProgress<Progress>
    {
        private readonly Action<Progress> action;
        public SyncProgress(Action<Progress> a) { action = a; }
        public void Report(Progress p) { action(p); }
    }

    private static void StructSizes()
    {
        Check(Native.InitStructSize(Native.diffuse_model_params_init) == Marshal.SizeOf(typeof(Native.ModelParams)),
            "sizeof ModelParams == diffuse_model_params_init's struct_size (" +
            Marshal.SizeOf(typeof(Native.ModelParams)) + ")");
        Check(Native.InitStructSize(Native.diffuse_ctx_params_init) == Marshal.SizeOf(typeof(Native.CtxParams)),
            "sizeof CtxParams == diffuse_ctx_params_init's struct_size (" +
            Marshal.SizeOf(typeof(Native.CtxParams)) + ")");
        Check(Native.InitStructSize(Native.diffuse_generate_params_init) ==
              Marshal.SizeOf(typeof(Native.GenerateParams)),
            "sizeof GenerateParams == diffuse_generate_params_init's struct_size (" +
            Marshal.SizeOf(typeof(Native.GenerateParams)) + ")");
        Check(Native.InitStructSize(Native.diffuse_edit_params_init) == Marshal.SizeOf(typeof(Native.EditParams)),
            "sizeof EditParams == diffuse_edit_params_init's struct_size (" +
            Marshal.SizeOf(typeof(Native.EditParams)) + ")");
        Check(Native.InitStructSize(Native.diffuse_variation_params_init) ==
              Marshal.SizeOf(typeof(Native.VariationParams)),
            "sizeof VariationParams == diffuse_variation_params_init's struct_size (" +
            Marshal.SizeOf(typeof(Native.VariationParams)) + ")");
        // Structs without an init function: sizes from the C layout on LP64.
        if (IntPtr.Size == 8)
        {
            Check(Marshal.SizeOf(typeof(Progress)) == 32 && Marshal.SizeOf(typeof(ModelInfo)) == 72 &&
                  Marshal.SizeOf(typeof(Native.Image)) == 32 && Marshal.SizeOf(typeof(Native.Images)) == 24 &&
                  Marshal.SizeOf(typeof(OutputFormat)) == 12,
                "sizes of Progress, ModelInfo, Image, Images, OutputFormat match the C layout (LP64)");
        }
    }

    private static void BadPath(string modelDir)
    {
        string bad = Path.Combine(modelDir, "does-not-exist");
        try
        {
            using (Model.Load(bad)) { }
            Check(false, "loading a missing path throws");
        }
        catch (DiffuseException e)
        {
            Check(e.Status == Status.NotFound, "missing path throws DiffuseException with Status.NotFound (" +
                                               e.Status + ")");
            Check(!string.IsNullOrEmpty(e.Detail) && e.Message.Length > 0,
                "the exception carries the library's message: " + e.Message);
        }
    }

    private static void CheckImage(Image img, int w, int h, string what)
    {
        Check(img.Width == w && img.Height == h && img.Format == PixelFormat.RGB8 && img.Stride >= w * 3 &&
              img.Data.Length == img.Stride * h, what + ": " + img.Width + "x" + img.Height + " RGB8, " +
                                                 img.Data.Length + " bytes");
        bool varied = false;
        for (int i = 1; i < img.Data.Length && !varied; i++) varied = img.Data[i] != img.Data[0];
        Check(varied, what + ": pixels are not all equal");
    }

    private static int Main(string[] args)
    {
        try
        {
            string modelDir = args.Length > 0
                ? args[0]
                : Path.Combine(Environment.GetEnvironmentVariable("DIFFUSE_FIXTURES") ?? "tests/fixtures",
                    "models", "tiny-sd1");
            Console.WriteLine("libdiffuse " + Model.LibraryVersionString + ", model " + modelDir);
            Check(Model.LibraryVersion / 10000 == Model.ExpectedMajor, "library ABI major is " + Model.ExpectedMajor);

            StructSizes();
            BadPath(modelDir);

            using (var model = Model.Load(modelDir))
            using (var ctx = model.CreateContext(new ContextOptions { Device = Device.Cpu }))
            {
                ModelInfo info = model.Info;
                Check(info.Family == ModelFamily.SD1 && info.LatentChannels == 4,
                    "model info: family " + info.Family + ", " + info.UnetParameters + " UNet parameters");
                int[] ids = model.Tokenize("a red fox");
                Check(ids.Length >= 3, "tokenize gives " + ids.Length + " ids");

                var opts = new GenerateOptions { Width = 64, Height = 64, Steps = 2, Seed = 42 };
                int reports = 0;
                Image[] imgs = ctx.Generate("a red fox", opts, new SyncProgress(p => reports++));
                Check(imgs.Length == 1, "generate returns one image");
                CheckImage(imgs[0], 64, 64, "generated image");
                Check(imgs[0].Seed == 42, "the image records its seed");
                Check(reports > 0, "progress was reported " + reports + " times");

                // Same seed, same image (deterministic CPU path).
                Image again = ctx.GenerateAsync("a red fox", opts).Result[0];
                Check(again.Data.Length == imgs[0].Data.Length, "GenerateAsync returns an image of the same size");

                // Cancel after the first progress report.
                using (var cts = new CancellationTokenSource())
                {
                    int seen = 0;
                    var cancelOpts = new GenerateOptions { Width = 64, Height = 64, Steps = 50, Seed = 1 };
                    Task<Image[]> task = ctx.GenerateAsync("a red fox", cancelOpts, new SyncProgress(p =>
                    {
                        if (Interlocked.Increment(ref seen) == 1) cts.Cancel();
                    }), cts.Token);
                    bool cancelled = false;
                    try
                    {
                        task.Wait();
                    }
                    catch (AggregateException ae)
                    {
                        cancelled = ae.InnerException is OperationCanceledException;
                        if (!cancelled) Console.WriteLine(ae.InnerException);
                    }
                    Check(cancelled && task.IsCanceled,
                        "GenerateAsync cancelled through the token throws OperationCanceledException (" + seen +
                        " progress reports)");
                    Check(seen <= 3, "the run stopped right after the first report");
                }

                // The context stays usable.
                Image[] after = ctx.GenerateAsync("a red fox", opts).Result;
                CheckImage(after[0], 64, 64, "generate on the same context after cancelling");
                bool same = true;
                for (int i = 0; i < after[0].Data.Length && same; i++) same = after[0].Data[i] == imgs[0].Data[i];
                Check(same, "after cancelling, the same seed gives the same image");

                // Variation of the generated image.
                Image[] vars = ctx.Variation(imgs[0], new VariationOptions { Steps = 2, Strength = 0.5f, Seed = 7 });
                CheckImage(vars[0], 64, 64, "variation");

                // Edit with a mask: right half repainted, left half kept.
                var maskData = new byte[64 * 64 * 3];
                for (int y = 0; y < 64; y++)
                    for (int x = 32; x < 64; x++)
                        for (int c = 0; c < 3; c++) maskData[(y * 64 + x) * 3 + c] = 255;
                var mask = new Image(64, 64, PixelFormat.RGB8, maskData);
                Image[] edits = ctx.Edit(imgs[0], "a blue bird",
                    new EditOptions { Mask = mask, Steps = 2, Seed = 3 });
                CheckImage(edits[0], 64, 64, "edit");
                bool kept = true;
                for (int y = 0; y < 64 && kept; y++)
                    for (int x = 0; x < 32 * 3 && kept; x++)
                        kept = edits[0].Data[y * edits[0].Stride + x] == imgs[0].Data[y * imgs[0].Stride + x];
                Check(kept, "edit keeps the unmasked pixels");

                // A bad argument surfaces the context's message.
                try
                {
                    ctx.Generate("x", new GenerateOptions { Width = 63, Height = 64, Steps = 1 });
                    Check(false, "width 63 throws");
                }
                catch (DiffuseException e)
                {
                    Check(e.Status == Status.InvalidArgument && e.Detail.Length > 0,
                        "width 63 throws InvalidArgument: " + e.Message);
                }
            }

            // Disposed handles throw instead of crashing.
            var m2 = Model.Load(modelDir);
            var c2 = m2.CreateContext();
            m2.Dispose(); // the context still holds the model
            Check(c2.Generate("", new GenerateOptions { Width = 64, Height = 64, Steps = 1 }).Length == 1,
                "a context keeps its model alive after the Model is disposed");
            c2.Dispose();
            try
            {
                c2.Generate("", new GenerateOptions { Width = 64, Height = 64, Steps = 1 });
                Check(false, "a disposed context throws");
            }
            catch (ObjectDisposedException)
            {
                Check(true, "a disposed context throws ObjectDisposedException");
            }

            Console.WriteLine("all " + passed + " checks passed");
            return 0;
        }
        catch (Exception e)
        {
            Console.WriteLine(e.Message.StartsWith("FAIL") ? e.Message : "FAIL: unexpected " + e);
            return 1;
        }
    }
}
