// TestDiffuse.cs - tests of the C# binding (bindings/csharp/Diffuse.cs) on
// the tiny-sd1 fixture model. Usage: TestDiffuse.exe MODEL_DIR
// Prints a PASS line per check; exits 1 on the first failure.
using System;
using System.Collections.Generic;
using System.IO;
using System.Runtime.InteropServices;
using System.Linq;
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
        Check(Native.InitStructSize(Native.diffuse_memory_query_init) == Marshal.SizeOf(typeof(Native.MemoryQuery)),
            "sizeof MemoryQuery == diffuse_memory_query_init's struct_size (" +
            Marshal.SizeOf(typeof(Native.MemoryQuery)) + ")");
        // Structs without an init function: sizes from the C layout on LP64.
        if (IntPtr.Size == 8)
        {
            Check(Marshal.SizeOf(typeof(Progress)) == 32 && Marshal.SizeOf(typeof(ModelInfo)) == 88 &&
                  Marshal.SizeOf(typeof(Native.Image)) == 32 && Marshal.SizeOf(typeof(Native.Images)) == 24 &&
                  Marshal.SizeOf(typeof(OutputFormat)) == 12 && Marshal.SizeOf(typeof(MemoryEstimate)) == 64 &&
                  Marshal.SizeOf(typeof(Native.DeviceInfo)) == 416,
                "sizes of Progress, ModelInfo, Image, Images, OutputFormat, MemoryEstimate, DeviceInfo match the " +
                "C layout (LP64)");
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

    private static bool SamePixels(Image a, Image b)
    {
        if (a.Width != b.Width || a.Height != b.Height || a.Data.Length != b.Data.Length) return false;
        for (int i = 0; i < a.Data.Length; i++)
            if (a.Data[i] != b.Data[i]) return false;
        return true;
    }

    /// <summary>Polls as a frame loop would (1 ms "frames") until the job is
    /// denoising at <paramref name="step"/> or has finished.</summary>
    private static JobStatus PollUntilStep(Job job, uint step)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            JobStatus s = job.Poll();
            if (s.IsFinished || (s.Stage == Stage.Denoise && s.Step >= step)) return s;
            if (sw.Elapsed.TotalSeconds > 60) throw new Exception("FAIL: job never reached step " + step + ": " + s);
            Thread.Sleep(1);
        }
    }

    private sealed class Boom : Exception
    {
        public Boom() : base("boom from the preview callback") { }
    }

    /// <summary>Jobs: the polling API, async generate built on them, cancel,
    /// busy contexts, timeouts, disposed jobs, previews.</summary>
    private static void Jobs(Model model, Context ctx)
    {
        var opts = new GenerateOptions
        {
            Width = 32, Height = 32, Steps = 3, Seed = 1234, Count = 2, GuidanceScale = 1f, Sampler = Sampler.Euler,
        };
        var longOpts = new GenerateOptions
        {
            Width = 64, Height = 64, Steps = 1000, Seed = 5, GuidanceScale = 1f, Sampler = Sampler.Euler,
        };
        Image[] reference = ctx.Generate("a red cube", opts);

        // Polling without callbacks, as a Unity Update() would.
        using (Job job = ctx.StartGenerate("a red cube", opts))
        {
            int polls = 0;
            bool sawDenoise = false;
            JobStatus s;
            while (true)
            {
                s = job.Poll();
                polls++;
                if (s.State == JobState.Running && s.Stage == Stage.Denoise) sawDenoise = true;
                if (s.IsFinished) break;
                Thread.Sleep(1);
            }
            Check(s.State == JobState.Done && s.Stage == Stage.Decode && s.ImageCount == 2,
                "polled job ends Done after " + polls + " polls (" + s + "), saw denoise: " + sawDenoise);
            Check(job.Wait(0) && job.IsFinished, "Wait(0) on a finished job is true");
            Image[] got = job.Result();
            Check(got.Length == 2 && SamePixels(got[0], reference[0]) && SamePixels(got[1], reference[1]) &&
                  got[1].Seed == 1235, "job images equal the blocking Generate's, with their seeds");
            Check(ReferenceEquals(job.Result(), got), "Result() again gives the same images");
            Check(job.LastError == "", "no message after success");
        }

        // Edit and variation jobs give the blocking calls' images.
        var maskData = new byte[32 * 32 * 3];
        for (int i = 0; i < maskData.Length / 2; i++) maskData[i] = 255; // top half: repaint
        var mask = new Image(32, 32, PixelFormat.RGB8, maskData);
        var eo = new EditOptions { Mask = mask, Steps = 2, Seed = 3 };
        Image[] eref = ctx.Edit(reference[0], "a blue bird", eo);
        using (Job job = ctx.StartEdit(reference[0], "a blue bird", eo))
        {
            Check(job.Wait(60000), "edit job finishes");
            Check(SamePixels(job.Result()[0], eref[0]), "StartEdit gives Edit's image");
        }
        var vo = new VariationOptions { Steps = 4, Strength = 0.5f, Seed = 7 };
        Image[] vref = ctx.Variation(reference[0], vo);
        using (Job job = ctx.StartVariation(reference[0], vo))
        {
            Check(job.Wait(60000), "variation job finishes");
            Check(SamePixels(job.Result()[0], vref[0]), "StartVariation gives Variation's image");
        }

        // Busy, timeouts, cancel.
        using (Job job = ctx.StartGenerate("a blue square", longOpts))
        {
            JobStatus s = PollUntilStep(job, 1);
            Check(s.State == JobState.Running, "long job is running: " + s + " " + job.LastError);
            try
            {
                ctx.StartGenerate("second", opts).Dispose();
                Check(false, "a second StartGenerate on a busy context throws");
            }
            catch (DiffuseException e)
            {
                Check(e.Status == Status.Busy, "a second StartGenerate throws Status.Busy: " + e.Message);
            }
            try
            {
                ctx.Generate("blocking", opts);
                Check(false, "a blocking Generate during a job throws");
            }
            catch (DiffuseException e)
            {
                Check(e.Status == Status.Busy, "a blocking Generate during a job throws Busy at once");
            }
            try
            {
                job.Result();
                Check(false, "Result() of a running job throws");
            }
            catch (DiffuseException e)
            {
                Check(e.Status == Status.Busy, "Result() of a running job throws Busy");
            }
            var sw = System.Diagnostics.Stopwatch.StartNew();
            Check(!job.Wait(50) && sw.ElapsedMilliseconds >= 40, "Wait(50) on a running job returns false after " +
                                                                    sw.ElapsedMilliseconds + " ms");
            sw.Restart();
            job.Cancel();
            Check(job.Wait(30000), "Wait returns after Cancel (" + sw.ElapsedMilliseconds + " ms)");
            s = job.Poll();
            Check(s.State == JobState.Cancelled && s.Step < s.Total, "cancelled job stopped early: " + s);
            try
            {
                job.Result();
                Check(false, "Result() of a cancelled job throws");
            }
            catch (DiffuseException e)
            {
                Check(e.Status == Status.Cancelled, "Result() of a cancelled job throws Status.Cancelled");
            }
            job.Cancel(); // harmless after the end
        }

        // A disposed job throws; it never reaches the library.
        Job running = ctx.StartGenerate("disposed while running", longOpts);
        PollUntilStep(running, 1);
        running.Dispose(); // cancels and joins
        running.Dispose(); // twice is fine
        int disposedThrows = 0;
        Action[] calls = { () => running.Poll(), () => running.Wait(0), running.Cancel, () => running.Result() };
        foreach (Action a in calls)
        {
            try { a(); }
            catch (ObjectDisposedException) { disposedThrows++; }
        }
        Check(disposedThrows == calls.Length, "a disposed Job throws ObjectDisposedException from every member");
        Check(ctx.Generate("after", opts).Length == 2, "the context is free after disposing a running job");

        // GenerateAsync is built on jobs: progress comes from polls, and while
        // it runs the context holds a library job (a blocking call is refused
        // by the library with BUSY, not by the binding's own flag).
        var reports = new List<Progress>();
        ctx.PollInterval = TimeSpan.FromMilliseconds(2);
        Task<Image[]> t = ctx.GenerateAsync("a red cube", opts, new SyncProgress(p =>
        {
            lock (reports) reports.Add(p);
        }));
        string busyDetail = null;
        while (!t.IsCompleted && busyDetail == null)
        {
            lock (reports)
                if (reports.Count == 0) continue; // the job has not started yet
            try { ctx.Generate("x", new GenerateOptions { Width = 64, Height = 64, Steps = 1 }); }
            catch (DiffuseException e) { if (e.Status == Status.Busy) busyDetail = e.Detail; }
            Thread.Sleep(1);
        }
        Image[] asyncImages = t.Result;
        Check(SamePixels(asyncImages[0], reference[0]) && SamePixels(asyncImages[1], reference[1]),
            "GenerateAsync gives the blocking Generate's images");
        Check(busyDetail != null && busyDetail.Contains("job"), "during GenerateAsync a library job holds the context (" +
                                                                busyDetail + ")");
        lock (reports)
        {
            bool ordered = reports.Count > 0;
            for (int i = 1; i < reports.Count; i++)
            {
                Progress a = reports[i - 1], b = reports[i];
                if (b.ImageIndex < a.ImageIndex || (b.ImageIndex == a.ImageIndex && b.Stage < a.Stage) ||
                    (b.ImageIndex == a.ImageIndex && b.Stage == a.Stage && b.Step <= a.Step))
                    ordered = false;
            }
            Progress last = reports[reports.Count - 1];
            Check(ordered && reports.TrueForAll(p => p.Total > 0 && p.Step <= p.Total),
                "GenerateAsync reported " + reports.Count + " progress changes in order, from polls");
            Check(last.Stage == Stage.Decode && last.Step == last.Total && last.ImageIndex == 1,
                "the last report is the final decode: " + last);
        }

        // Cancelling the token cancels the job (diffuse_job_cancel).
        using (var cts = new CancellationTokenSource())
        {
            uint lastStep = 0;
            Task<Image[]> lt = ctx.GenerateAsync("a blue square", longOpts, new SyncProgress(p =>
            {
                if (p.Stage == Stage.Denoise) lastStep = p.Step;
                if (p.Stage == Stage.Denoise && p.Step >= 2) cts.Cancel();
            }), cts.Token);
            bool cancelled = false;
            try { lt.Wait(); }
            catch (AggregateException ae) { cancelled = ae.InnerException is OperationCanceledException; }
            Check(cancelled && lt.IsCanceled && lastStep < 100,
                "GenerateAsync on a job cancelled by the token at step " + lastStep + " of 1000");
        }
        using (var cts = new CancellationTokenSource())
        {
            cts.Cancel();
            Task<Image[]> pre = ctx.GenerateAsync("x", opts, null, cts.Token);
            bool cancelled = false;
            try { pre.Wait(); }
            catch (AggregateException ae) { cancelled = ae.InnerException is OperationCanceledException; }
            Check(cancelled, "an already-cancelled token cancels GenerateAsync before it starts");
        }
        Check(ctx.VariationAsync(reference[0], vo).Result.Length == 1 &&
              SamePixels(ctx.EditAsync(reference[0], "a blue bird", eo).Result[0], eref[0]),
            "EditAsync and VariationAsync run on jobs too");

        // Previews: every k steps on the job's worker thread.
        var previews = new List<string>();
        int mainThread = Thread.CurrentThread.ManagedThreadId;
        bool otherThread = true;
        uint scale = model.Info.VaeScaleFactor;
        ctx.SetPreview((img, p) =>
        {
            lock (previews) previews.Add(img.Width + "x" + img.Height + " " + img.Format + " step " + p.Step);
            if (Thread.CurrentThread.ManagedThreadId == mainThread) otherThread = false;
        }, 2);
        using (Job job = ctx.StartGenerate("a red circle",
                   new GenerateOptions { Width = 64, Height = 64, Steps = 5, Seed = 1, Sampler = Sampler.Euler }))
        {
            Check(job.Wait(60000) && job.Result().Length == 1, "job with previews finishes");
        }
        string side = (64 / scale).ToString();
        string want = string.Join(",", new[] { 2, 4, 5 }.Select(k => side + "x" + side + " RGB8 step " + k));
        Check(string.Join(",", previews) == want && otherThread,
            "previews every 2 steps on the worker thread: " + string.Join(", ", previews));

        ctx.SetPreview((img, p) => { throw new Boom(); }, 1);
        using (Job job = ctx.StartGenerate("x", longOpts))
        {
            job.Wait();
            bool boom = false;
            try { job.Result(); }
            catch (Boom) { boom = true; }
            Check(boom && job.Poll().State == JobState.Cancelled,
                "an exception in the preview callback cancels the job and is rethrown by Result()");
        }
        bool blockingBoom = false;
        try { ctx.Generate("x", opts); }
        catch (Boom) { blockingBoom = true; }
        Check(blockingBoom, "... and by a blocking call");
        ctx.SetPreview(null);
        previews.Clear();
        Check(ctx.Generate("x", opts).Length == 2 && previews.Count == 0,
            "SetPreview(null) turns previews off; the context stays usable");
    }

    /// <summary>Since 0.3: model info's dtype and host bytes, memory
    /// estimates, devices, decoded previews.</summary>
    private static void V03(Model model, Context ctx)
    {
        ModelInfo info = model.Info;
        ulong parameters = info.UnetParameters + info.VaeParameters + info.TextEncoderParameters;
        Check(info.WeightDtype == (info.WeightBytes > 3 * parameters ? WeightType.F32 : WeightType.F16) ||
              info.WeightDtype == WeightType.BF16, "ModelInfo.WeightDtype " + info.WeightDtype + " fits " +
                                                  info.WeightBytes + " bytes for " + parameters + " parameters");
        Check(info.HostBytes >= 4 * parameters * 95 / 100 && info.HostBytes <= 4 * parameters * 105 / 100,
            "ModelInfo.HostBytes " + info.HostBytes + " is about 4 bytes per parameter");

        MemoryEstimate e = model.EstimateMemory(new MemoryQueryOptions { Width = 64, Height = 64 });
        Check(e.HostBytes == e.ModelHostBytes + e.ContextHostBytes + e.RunHostBytes + e.OutputBytes &&
              e.ModelHostBytes == info.HostBytes && e.OutputBytes == 64 * 64 * 3 && e.ContextHostBytes > 0 &&
              e.ContextHostBytes < 512u << 20 && e.Fits == 1 && e.DeviceBytes == 0,
            "EstimateMemory: " + e);
        MemoryEstimate e4 = model.EstimateMemory(new MemoryQueryOptions
        {
            Operation = Operation.Variation, Width = 128, Height = 128, Count = 4, Format = PixelFormat.RGBA8,
        });
        Check(e4.OutputBytes == 4 * 128 * 128 * 4 && e4.ContextHostBytes > e.ContextHostBytes &&
              e4.HostBytes == e4.ModelHostBytes + e4.ContextHostBytes + e4.RunHostBytes + e4.OutputBytes,
            "EstimateMemory grows with the call: " + e4);
        Check(model.EstimateMemory(new MemoryQueryOptions { MemoryBudget = 1u << 20 }).Fits == 0,
            "a 1 MiB budget does not fit");
        try
        {
            model.EstimateMemory(new MemoryQueryOptions { Width = 33, Height = 64 });
            Check(false, "EstimateMemory with width 33 throws");
        }
        catch (DiffuseException ex)
        {
            Check(ex.Status == Status.InvalidArgument, "EstimateMemory with width 33 throws InvalidArgument");
        }

        DeviceInfo[] devices = Devices.ListDevices();
        Check(devices.Length >= 2 && devices[0].Device == Device.Cpu && devices[0].Available &&
              devices[0].Name.Length > 0 && devices[0].MemoryBytes > 0 && devices[0].Threads >= 1,
            "ListDevices starts with an available CPU: " + devices[0]);
        DeviceInfo[] cuda = devices.Where(d => d.Device == Device.Cuda).ToArray();
        Check(cuda.Length >= 1, "ListDevices has a CUDA entry");
        if (!cuda.Any(d => d.Available))
        {
            Check(cuda.Length == 1 && cuda[0].Note.Length > 0, "the unavailable CUDA entry says why: " + cuda[0]);
            try
            {
                using (new Context(model, new ContextOptions { Device = Device.Cuda })) { }
                Check(false, "a CUDA context without a usable GPU throws");
            }
            catch (DiffuseException ex)
            {
                Check(ex.Status == Status.NoDevice, "a CUDA context without a usable GPU throws NoDevice");
            }
        }

        using (var c1 = new Context(model, new ContextOptions { Device = Device.Cpu, Threads = 1 }))
        {
            DeviceInfo d = c1.Device;
            Check(c1.RequestedDevice == Device.Cpu && d.Device == Device.Cpu && d.Available && d.Threads == 1 &&
                  d.Name == devices[0].Name, "Context.Device of a 1-thread CPU context: " + d);
            // Since 0.4: the context's memory (its host arena after a call).
            c1.Generate("a red circle", new GenerateOptions { Width = 32, Height = 32, Steps = 1 });
            ContextMemory mem = c1.Memory;
            Check(mem.Device == Device.Cpu && mem.HostBytes > 0 && mem.DeviceBytes == 0 && mem.DevicePeakBytes == 0 &&
                  mem.MemoryBudget == 0, "Context.Memory of a CPU context after a call: host " + mem.HostBytes);
        }
        using (var auto = new Context(model))
        {
            Check(auto.RequestedDevice == Device.Auto &&
                  auto.Device.Device == (cuda.Any(d => d.Available) ? Device.Cuda : Device.Cpu),
                "Context.Device of an Auto context: " + auto.Device);
        }

        // Decoded previews: every 2nd step (and the last) full size, the others latent size.
        var sizes = new List<string>();
        ctx.SetPreview((img, p) => { lock (sizes) sizes.Add(p.Step + ":" + img.Width + "x" + img.Height); }, 1);
        ctx.SetPreviewDecode(2);
        ctx.Generate("a red circle",
            new GenerateOptions { Width = 64, Height = 64, Steps = 5, Seed = 1, GuidanceScale = 1f, Sampler = Sampler.Euler });
        string s = (64 / info.VaeScaleFactor).ToString();
        string want = string.Format("1:{0}x{0},2:64x64,3:{0}x{0},4:64x64,5:64x64", s);
        Check(string.Join(",", sizes) == want, "SetPreviewDecode(2): " + string.Join(", ", sizes));
        sizes.Clear();
        ctx.SetPreviewDecode(0);
        ctx.Generate("a red circle",
            new GenerateOptions { Width = 64, Height = 64, Steps = 2, Seed = 1, GuidanceScale = 1f, Sampler = Sampler.Euler });
        Check(string.Join(",", sizes) == string.Format("1:{0}x{0},2:{0}x{0}", s), "SetPreviewDecode(0) turns it off: " +
            string.Join(", ", sizes));
        ctx.SetPreview(null);
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

                Jobs(model, ctx);
                V03(model, ctx);

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
