// Diffuse.cs - C# binding of libdiffuse (include/diffuse.h) through P/Invoke.
//
// One source file, no dependencies beyond the .NET Framework 4.5 profile
// (System, System.Core): it builds with Mono's mcs, with Unity, and with .NET.
//
// Finding the native library
// --------------------------
// Every entry point is declared [DllImport("diffuse")]. How "diffuse" turns
// into a file depends on the runtime:
//
//  * Mono (Linux): Mono tries libdiffuse.so, which only exists where the
//    development symlink is installed. Ship a dllmap next to the assembly,
//    named after it (Diffuse.dll.config for Diffuse.dll), mapping the name
//    to the versioned soname the loader finds (LD_LIBRARY_PATH, ld.so cache):
//
//        <configuration>
//          <dllmap dll="diffuse" target="libdiffuse.so.0" os="linux"/>
//          <dllmap dll="diffuse" target="libdiffuse.0.dylib" os="osx"/>
//        </configuration>
//
//    (scripts/csharp-tests.sh writes exactly this and runs the tests so.)
//  * Unity (native plugin): copy libdiffuse.so (Linux; the real file, e.g. a
//    copy of libdiffuse.so.0.x.y renamed), libdiffuse.dylib (macOS) or
//    diffuse.dll (Windows) into Assets/Plugins (or Assets/Plugins/x86_64) and
//    mark it for the target platform in the plugin inspector. Unity resolves
//    "diffuse" to it. With IL2CPP (all AOT platforms) native code may only
//    call back into static methods marked [MonoPInvokeCallback]; this binding
//    already uses only such callbacks (see Callbacks below), so nothing
//    more is needed. Unity's own AOT.MonoPInvokeCallbackAttribute is used
//    when UNITY_5_3_OR_NEWER is defined; elsewhere an identical attribute is
//    declared here.
//  * .NET (Core) 3.0 or newer: DllImport tries libdiffuse.so; either install
//    the development symlink, or call
//    NativeLibrary.SetDllImportResolver(typeof(Diffuse.Model).Assembly, ...)
//    in the host to load "libdiffuse.so.0" (NativeLibrary is not part of the
//    .NET Framework profile this file targets, so it is not called here).
//
// Threads
// -------
// A Model may be shared by any number of threads and contexts. A Context
// runs one call at a time (a second concurrent call throws DiffuseException
// with Status.Busy). Generate/Edit/Variation block; the *Async variants run
// them on a thread-pool thread (Task.Run), report progress through
// IProgress<Progress> and cancel through a CancellationToken: once the token
// is cancelled the next progress callback asks the library to stop, the call
// returns within one step and the task ends with OperationCanceledException.
// The context stays usable afterwards.
//
// Memory
// ------
// Models and contexts are SafeHandles (ModelHandle, ContextHandle): Dispose
// them, or the finalizer frees them. A context holds a reference on its
// model's handle, so the model is freed only after its last context. Images
// are copied into managed byte[] and the library's memory is released with
// diffuse_images_free() before the call returns.

using System;
using System.Collections.Generic;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.Win32.SafeHandles;

#if !UNITY_5_3_OR_NEWER
namespace AOT
{
    /// <summary>Marks a static method that native code calls back (IL2CPP needs
    /// it; Mono and .NET ignore it). Unity ships the same attribute.</summary>
    [AttributeUsage(AttributeTargets.Method)]
    public sealed class MonoPInvokeCallbackAttribute : Attribute
    {
        public MonoPInvokeCallbackAttribute(Type delegateType) { DelegateType = delegateType; }
        public Type DelegateType { get; private set; }
    }
}
#endif

namespace Diffuse
{
    using AOT; // Unity's AOT.MonoPInvokeCallbackAttribute, or the one above

    // ------------------------------------------------------------------
    // Enums (values as in diffuse.h; C enums are int-sized)
    // ------------------------------------------------------------------

    /// <summary>diffuse_status: result of every fallible call.</summary>
    public enum Status : int
    {
        Ok = 0,
        InvalidArgument = 1,
        OutOfMemory = 2,
        IO = 3,
        NotFound = 4,
        ModelFormat = 5,
        ModelTruncated = 6,
        ModelMissingTensor = 7,
        ModelShape = 8,
        ModelConfig = 9,
        ModelUnsafe = 10,
        Unsupported = 11,
        NoDevice = 12,
        Device = 13,
        Cancelled = 14,
        Busy = 15,
        Internal = 16,
        /// <summary>DIFFUSE_ERR_TIMEOUT (asynchronous job waits).</summary>
        Timeout = 17,
    }

    public enum LogLevel : int { Error = 0, Warn = 1, Info = 2, Debug = 3 }

    public enum Stage : int { Load = 0, Text = 1, Encode = 2, Denoise = 3, Decode = 4 }

    public enum WeightType : int { Auto = 0, F32 = 1, F16 = 2, BF16 = 3 }

    public enum ModelFamily : int { Unknown = 0, SD1 = 1, SD2 = 2 }

    public enum Device : int { Auto = 0, Cpu = 1, Cuda = 2 }

    public enum Precision : int { Auto = 0, F32 = 1, F16 = 2, BF16 = 3 }

    public enum PixelFormat : int { RGB8 = 0, RGBA8 = 1, BGRA8 = 2 }

    public enum RowOrigin : int { TopLeft = 0, BottomLeft = 1 }

    public enum ColorSpace : int { Srgb = 0, Linear = 1 }

    public enum Sampler : int
    {
        Default = 0, Ddim = 1, Ddpm = 2, Pndm = 3, Lms = 4, Euler = 5, EulerA = 6, Heun = 7,
        DpmPP2M = 8, DpmPP2MKarras = 9, DpmPPSde = 10, UniPC = 11,
    }

    // ------------------------------------------------------------------
    // Structs, field for field in header order
    // ------------------------------------------------------------------

    /// <summary>diffuse_progress: what a running call is doing. Passed to
    /// IProgress&lt;Progress&gt;.Report on the thread that runs the call.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Progress
    {
        public uint StructSize;
        public Stage Stage;
        /// <summary>Steps done in this stage, 0..Total.</summary>
        public uint Step;
        public uint Total;
        public uint ImageIndex;
        public uint ImageCount;
        public double ElapsedSeconds;

        public override string ToString()
        {
            return string.Format("{0} {1}/{2} (image {3} of {4}, {5:F2} s)", Stage, Step, Total, ImageIndex + 1,
                ImageCount, ElapsedSeconds);
        }
    }

    /// <summary>diffuse_model_info: facts about a loaded model.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct ModelInfo
    {
        public uint StructSize;
        public ModelFamily Family;
        public uint UnetInChannels;
        public uint LatentChannels;
        public uint VaeScaleFactor;
        public uint SampleSize;
        public uint TextHiddenSize;
        public uint TextLayers;
        public int VPrediction;
        public ulong UnetParameters;
        public ulong VaeParameters;
        public ulong TextEncoderParameters;
        public ulong WeightBytes;
    }

    /// <summary>diffuse_output_format.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct OutputFormat
    {
        public PixelFormat Format;
        public RowOrigin Origin;
        public ColorSpace ColorSpace;
    }

    /// <summary>The raw C structs and entry points. Pointers are IntPtr and
    /// callbacks are function pointers (IntPtr), so every struct is blittable
    /// and marshals without copies or surprises.</summary>
    public static class Native
    {
        public const string Library = "diffuse";

        [StructLayout(LayoutKind.Sequential)]
        public struct ModelParams
        {
            public uint struct_size;
            public IntPtr log_fn;
            public IntPtr log_user;
            public LogLevel log_level;
            public WeightType weight_type;
            public IntPtr error_buf;
            public UIntPtr error_buf_size;
        }

        [StructLayout(LayoutKind.Sequential)]
        public struct CtxParams
        {
            public uint struct_size;
            public Device device;
            public int device_index;
            public int n_threads;
            public Precision precision;
            public IntPtr log_fn;
            public IntPtr log_user;
            public LogLevel log_level;
            public IntPtr progress_fn;
            public IntPtr progress_user;
            public ulong memory_budget;
        }

        [StructLayout(LayoutKind.Sequential)]
        public struct Image
        {
            public uint width;
            public uint height;
            public uint stride;
            public PixelFormat format;
            public RowOrigin origin;
            public ColorSpace color_space;
            public IntPtr data;
        }

        [StructLayout(LayoutKind.Sequential)]
        public struct Images
        {
            public uint count;
            public IntPtr images;
            public IntPtr seeds;
        }

        [StructLayout(LayoutKind.Sequential)]
        public struct GenerateParams
        {
            public uint struct_size;
            public IntPtr prompt;
            public IntPtr negative_prompt;
            public uint n_images;
            public uint width;
            public uint height;
            public uint steps;
            public float guidance_scale;
            public float guidance_rescale;
            public Sampler sampler;
            public ulong seed;
            public uint clip_skip;
            public OutputFormat output;
            public uint tile_x;
            public uint tile_y;
        }

        [StructLayout(LayoutKind.Sequential)]
        public struct EditParams
        {
            public uint struct_size;
            public IntPtr image;
            public IntPtr mask;
            public IntPtr prompt;
            public IntPtr negative_prompt;
            public uint n_images;
            public uint steps;
            public float guidance_scale;
            public float strength;
            public Sampler sampler;
            public ulong seed;
            public float mask_feather;
            public OutputFormat output;
        }

        [StructLayout(LayoutKind.Sequential)]
        public struct VariationParams
        {
            public uint struct_size;
            public IntPtr image;
            public IntPtr prompt;
            public IntPtr negative_prompt;
            public uint n_images;
            public uint steps;
            public float guidance_scale;
            public float strength;
            public Sampler sampler;
            public ulong seed;
            public OutputFormat output;
        }

        /// <summary>void (*diffuse_log_fn)(diffuse_log_level, const char *, void *)</summary>
        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        public delegate void LogFn(LogLevel level, IntPtr message, IntPtr user);

        /// <summary>int (*diffuse_progress_fn)(const diffuse_progress *, void *)</summary>
        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        public delegate int ProgressFn(IntPtr progress, IntPtr user);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern uint diffuse_version();

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern IntPtr diffuse_version_string();

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern IntPtr diffuse_status_string(Status status);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern void diffuse_model_params_init(IntPtr p);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_model_load(byte[] pathUtf8, IntPtr p, out ModelHandle model);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern void diffuse_model_free(IntPtr model);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_model_get_info(ModelHandle model, ref ModelInfo info);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_tokenize(ModelHandle model, byte[] textUtf8, int[] ids,
            UIntPtr capacity, out UIntPtr count);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern void diffuse_ctx_params_init(IntPtr p);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_ctx_create(ModelHandle model, IntPtr p, out ContextHandle ctx);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern void diffuse_ctx_free(IntPtr ctx);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern IntPtr diffuse_ctx_last_error(ContextHandle ctx);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern void diffuse_images_free(IntPtr images);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern void diffuse_generate_params_init(IntPtr p);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_generate(ContextHandle ctx, IntPtr p, out IntPtr images);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern void diffuse_edit_params_init(IntPtr p);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_edit(ContextHandle ctx, IntPtr p, out IntPtr images);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern void diffuse_variation_params_init(IntPtr p);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_variation(ContextHandle ctx, IntPtr p, out IntPtr images);

        /// <summary>Room past our struct in which a *_params_init of a newer
        /// library (whose struct grew at the end) writes its extra fields, so
        /// they keep the library's defaults.</summary>
        public const int ParamsSlack = 1024;

        /// <summary>A *_params_init function: fills the struct at the pointer.</summary>
        public delegate void ParamsInit(IntPtr p);

        /// <summary>The struct_size that <paramref name="init"/> writes, i.e.
        /// sizeof(the C struct) of the loaded library.</summary>
        public static uint InitStructSize(ParamsInit init)
        {
            IntPtr buf = Marshal.AllocHGlobal(4096);
            try
            {
                for (int i = 0; i < 4096; i++) Marshal.WriteByte(buf, i, 0);
                init(buf);
                return (uint)Marshal.ReadInt32(buf);
            }
            finally { Marshal.FreeHGlobal(buf); }
        }

        /// <summary>A NUL-terminated UTF-8 string in native memory, or null.</summary>
        internal static string Utf8ToString(IntPtr p)
        {
            if (p == IntPtr.Zero) return null;
            int n = 0;
            while (Marshal.ReadByte(p, n) != 0) n++;
            var bytes = new byte[n];
            Marshal.Copy(p, bytes, 0, n);
            return Encoding.UTF8.GetString(bytes);
        }

        /// <summary>NUL-terminated UTF-8 bytes of <paramref name="s"/>.</summary>
        internal static byte[] Utf8Z(string s)
        {
            int n = Encoding.UTF8.GetByteCount(s);
            var b = new byte[n + 1];
            Encoding.UTF8.GetBytes(s, 0, s.Length, b, 0);
            return b;
        }
    }

    /// <summary>A params struct initialised by its *_params_init inside a
    /// native buffer with room for a newer library's larger struct. Change
    /// Value, then pass Pointer (which writes Value back first).</summary>
    internal sealed class NativeParams<T> : IDisposable where T : struct
    {
        private IntPtr buf;
        private readonly List<IntPtr> strings = new List<IntPtr>();
        public T Value;

        public NativeParams(Native.ParamsInit init)
        {
            int size = Marshal.SizeOf(typeof(T)) + Native.ParamsSlack;
            buf = Marshal.AllocHGlobal(size);
            for (int i = 0; i < size; i++) Marshal.WriteByte(buf, i, 0);
            init(buf);
            uint written = (uint)Marshal.ReadInt32(buf);
            if (written > size)
            {
                Dispose();
                throw new InvalidOperationException(string.Format(
                    "libdiffuse's {0} is {1} bytes, beyond the {2} this binding reserves; upgrade the C# binding",
                    typeof(T).Name, written, size));
            }
            Value = (T)Marshal.PtrToStructure(buf, typeof(T));
        }

        /// <summary>A UTF-8 copy of <paramref name="s"/> that lives as long as
        /// these params (IntPtr.Zero for null).</summary>
        public IntPtr String(string s)
        {
            if (s == null) return IntPtr.Zero;
            byte[] b = Native.Utf8Z(s);
            IntPtr p = Marshal.AllocHGlobal(b.Length);
            Marshal.Copy(b, 0, p, b.Length);
            strings.Add(p);
            return p;
        }

        public IntPtr Pointer
        {
            get
            {
                if (buf == IntPtr.Zero) throw new ObjectDisposedException(GetType().Name);
                // Writes only our struct's bytes; a newer library's tail stays.
                Marshal.StructureToPtr(Value, buf, false);
                return buf;
            }
        }

        public void Dispose()
        {
            foreach (IntPtr p in strings) Marshal.FreeHGlobal(p);
            strings.Clear();
            if (buf != IntPtr.Zero) Marshal.FreeHGlobal(buf);
            buf = IntPtr.Zero;
        }
    }

    // ------------------------------------------------------------------
    // Errors
    // ------------------------------------------------------------------

    /// <summary>A libdiffuse call failed. Status is the library's status;
    /// Detail the library's message (which file, which tensor, ...).</summary>
    public class DiffuseException : Exception
    {
        public Status Status { get; private set; }
        public string Detail { get; private set; }

        public DiffuseException(Status status, string detail)
            : base(Compose(status, detail))
        {
            Status = status;
            Detail = detail ?? "";
        }

        private static string Compose(Status status, string detail)
        {
            string s = StatusString(status);
            return string.IsNullOrEmpty(detail) ? s + " (" + status + ")" : s + " (" + status + "): " + detail;
        }

        /// <summary>diffuse_status_string(): the library's short description.</summary>
        public static string StatusString(Status status)
        {
            try { return Native.Utf8ToString(Native.diffuse_status_string(status)); }
            catch (DllNotFoundException) { return status.ToString(); }
            catch (EntryPointNotFoundException) { return status.ToString(); }
        }
    }

    // ------------------------------------------------------------------
    // Handles
    // ------------------------------------------------------------------

    /// <summary>Owns a diffuse_model*; releases it with diffuse_model_free.</summary>
    public sealed class ModelHandle : SafeHandleZeroOrMinusOneIsInvalid
    {
        public ModelHandle() : base(true) { }

        protected override bool ReleaseHandle()
        {
            Native.diffuse_model_free(handle);
            return true;
        }
    }

    /// <summary>Owns a diffuse_ctx*; releases it with diffuse_ctx_free, then
    /// lets go of the model's handle and of the callback state, so the model
    /// outlives the context and the callbacks outlive both.</summary>
    public sealed class ContextHandle : SafeHandleZeroOrMinusOneIsInvalid
    {
        private ModelHandle model; // AddRef'ed while this context lives
        private GCHandle state;    // progress_user / log_user

        public ContextHandle() : base(true) { }

        internal void Attach(ModelHandle m, GCHandle s)
        {
            model = m;
            state = s;
        }

        protected override bool ReleaseHandle()
        {
            Native.diffuse_ctx_free(handle);
            if (state.IsAllocated) state.Free();
            if (model != null) model.DangerousRelease();
            model = null;
            return true;
        }
    }

    // ------------------------------------------------------------------
    // Callbacks: static methods only (IL2CPP), state through the user pointer
    // ------------------------------------------------------------------

    /// <summary>Receives log messages (level, text) on the thread of the call.</summary>
    public delegate void LogCallback(LogLevel level, string message);

    internal sealed class RunState
    {
        public IProgress<Progress> Progress;
        public CancellationToken Token;
        public ExceptionDispatchInfo Error;
    }

    /// <summary>What progress_user / log_user point at (through a GCHandle).</summary>
    internal sealed class CallbackState
    {
        public LogCallback Log;
        public volatile RunState Run;
    }

    internal static class Callbacks
    {
        // Static delegate instances: never collected, so the function pointers
        // handed to the library stay valid for every context's lifetime.
        internal static readonly Native.ProgressFn ProgressDelegate = OnProgress;
        internal static readonly Native.LogFn LogDelegate = OnLog;
        internal static readonly IntPtr ProgressPtr = Marshal.GetFunctionPointerForDelegate(ProgressDelegate);
        internal static readonly IntPtr LogPtr = Marshal.GetFunctionPointerForDelegate(LogDelegate);

        [MonoPInvokeCallback(typeof(Native.ProgressFn))]
        private static int OnProgress(IntPtr progress, IntPtr user)
        {
            RunState run = null;
            try
            {
                var st = (CallbackState)GCHandle.FromIntPtr(user).Target;
                run = st.Run;
                if (run == null) return 0;
                if (run.Error != null || run.Token.IsCancellationRequested) return 1;
                if (run.Progress != null)
                {
                    var p = (Progress)Marshal.PtrToStructure(progress, typeof(Progress));
                    run.Progress.Report(p);
                }
                return run.Token.IsCancellationRequested ? 1 : 0;
            }
            catch (Exception e)
            {
                // Never let an exception unwind through native frames: stop
                // the run and rethrow on the calling thread afterwards.
                if (run != null && run.Error == null) run.Error = ExceptionDispatchInfo.Capture(e);
                return 1;
            }
        }

        [MonoPInvokeCallback(typeof(Native.LogFn))]
        private static void OnLog(LogLevel level, IntPtr message, IntPtr user)
        {
            try
            {
                var st = (CallbackState)GCHandle.FromIntPtr(user).Target;
                if (st.Log != null) st.Log(level, Native.Utf8ToString(message));
            }
            catch (Exception)
            {
                // A logger that throws loses that message, nothing more.
            }
        }
    }

    // ------------------------------------------------------------------
    // Images
    // ------------------------------------------------------------------

    /// <summary>An 8-bit image in managed memory: Height rows of Stride bytes.</summary>
    public sealed class Image
    {
        public int Width { get; private set; }
        public int Height { get; private set; }
        public int Stride { get; private set; }
        public PixelFormat Format { get; private set; }
        public RowOrigin Origin { get; private set; }
        public ColorSpace ColorSpace { get; private set; }
        public byte[] Data { get; private set; }
        /// <summary>The seed that produced it (0 for images made by the host).</summary>
        public ulong Seed { get; private set; }

        public static int BytesPerPixel(PixelFormat f) { return f == PixelFormat.RGB8 ? 3 : 4; }

        /// <summary>An image over <paramref name="data"/> (not copied). Stride 0
        /// means tightly packed rows.</summary>
        public Image(int width, int height, PixelFormat format, byte[] data, int stride = 0,
            RowOrigin origin = RowOrigin.TopLeft, ColorSpace colorSpace = ColorSpace.Srgb)
        {
            if (width <= 0 || height <= 0) throw new ArgumentOutOfRangeException("width/height");
            if (stride == 0) stride = width * BytesPerPixel(format);
            if (stride < width * BytesPerPixel(format)) throw new ArgumentOutOfRangeException("stride");
            if (data == null) throw new ArgumentNullException("data");
            if ((long)stride * height > data.Length) throw new ArgumentException("data is shorter than height * stride");
            Width = width; Height = height; Stride = stride; Format = format; Origin = origin;
            ColorSpace = colorSpace; Data = data;
        }

        internal Image(Native.Image n, ulong seed)
        {
            Width = (int)n.width; Height = (int)n.height; Stride = (int)n.stride;
            Format = n.format; Origin = n.origin; ColorSpace = n.color_space; Seed = seed;
            Data = new byte[checked((long)n.stride * n.height)];
            if (Data.Length > 0) Marshal.Copy(n.data, Data, 0, Data.Length);
        }

        /// <summary>Copies the library's images into managed memory and frees them.</summary>
        internal static Image[] TakeAll(IntPtr images)
        {
            try
            {
                if (images == IntPtr.Zero) return new Image[0];
                var set = (Native.Images)Marshal.PtrToStructure(images, typeof(Native.Images));
                var result = new Image[set.count];
                int size = Marshal.SizeOf(typeof(Native.Image));
                for (int i = 0; i < set.count; i++)
                {
                    var n = (Native.Image)Marshal.PtrToStructure(new IntPtr(set.images.ToInt64() + (long)i * size),
                        typeof(Native.Image));
                    ulong seed = set.seeds == IntPtr.Zero ? 0 : (ulong)Marshal.ReadInt64(set.seeds, i * 8);
                    result[i] = new Image(n, seed);
                }
                return result;
            }
            finally { Native.diffuse_images_free(images); }
        }

        /// <summary>Pins Data and describes it as a diffuse_image in native memory.</summary>
        internal sealed class Pinned : IDisposable
        {
            private GCHandle pin;
            public IntPtr Pointer { get; private set; }

            public Pinned(Image img)
            {
                pin = GCHandle.Alloc(img.Data, GCHandleType.Pinned);
                var n = new Native.Image
                {
                    width = (uint)img.Width, height = (uint)img.Height, stride = (uint)img.Stride,
                    format = img.Format, origin = img.Origin, color_space = img.ColorSpace,
                    data = pin.AddrOfPinnedObject(),
                };
                Pointer = Marshal.AllocHGlobal(Marshal.SizeOf(typeof(Native.Image)));
                Marshal.StructureToPtr(n, Pointer, false);
            }

            public void Dispose()
            {
                if (Pointer != IntPtr.Zero) Marshal.FreeHGlobal(Pointer);
                Pointer = IntPtr.Zero;
                if (pin.IsAllocated) pin.Free();
            }
        }
    }

    // ------------------------------------------------------------------
    // Models
    // ------------------------------------------------------------------

    /// <summary>A loaded checkpoint; immutable and shareable between threads.</summary>
    public sealed class Model : IDisposable
    {
        /// <summary>The ABI major version this binding speaks.</summary>
        public const int ExpectedMajor = 0;

        public ModelHandle Handle { get; private set; }

        private Model(ModelHandle h) { Handle = h; }

        /// <summary>Version of the loaded library, MAJOR*10000 + MINOR*100 + PATCH.</summary>
        public static uint LibraryVersion { get { return Native.diffuse_version(); } }

        public static string LibraryVersionString
        {
            get { return Native.Utf8ToString(Native.diffuse_version_string()); }
        }

        /// <summary>diffuse_model_load(): a diffusers folder or a single
        /// .safetensors checkpoint. Throws DiffuseException with the status and
        /// the library's message on failure.</summary>
        public static Model Load(string path, LogCallback log = null, LogLevel logLevel = LogLevel.Warn)
        {
            if (path == null) throw new ArgumentNullException("path");
            uint v = Native.diffuse_version();
            if (v / 10000 != ExpectedMajor)
                throw new DiffuseException(Status.Unsupported, string.Format(
                    "libdiffuse {0} has ABI major {1}; this binding needs {2}", LibraryVersionString, v / 10000,
                    ExpectedMajor));
            const int errSize = 1024;
            IntPtr err = Marshal.AllocHGlobal(errSize);
            GCHandle state = default(GCHandle);
            try
            {
                Marshal.WriteByte(err, 0, 0);
                using (var p = new NativeParams<Native.ModelParams>(Native.diffuse_model_params_init))
                {
                    p.Value.error_buf = err;
                    p.Value.error_buf_size = new UIntPtr(errSize);
                    p.Value.log_level = logLevel;
                    if (log != null)
                    {
                        state = GCHandle.Alloc(new CallbackState { Log = log });
                        p.Value.log_fn = Callbacks.LogPtr;
                        p.Value.log_user = GCHandle.ToIntPtr(state);
                    }
                    ModelHandle h;
                    Status s = Native.diffuse_model_load(Native.Utf8Z(path), p.Pointer, out h);
                    if (s != Status.Ok)
                    {
                        if (h != null) h.Dispose();
                        string msg = Native.Utf8ToString(err);
                        throw new DiffuseException(s, string.IsNullOrEmpty(msg) ? path : msg);
                    }
                    return new Model(h);
                }
            }
            finally
            {
                if (state.IsAllocated) state.Free();
                Marshal.FreeHGlobal(err);
            }
        }

        /// <summary>diffuse_model_get_info().</summary>
        public ModelInfo Info
        {
            get
            {
                var info = new ModelInfo { StructSize = (uint)Marshal.SizeOf(typeof(ModelInfo)) };
                Status s = Native.diffuse_model_get_info(Handle, ref info);
                if (s != Status.Ok) throw new DiffuseException(s, "diffuse_model_get_info");
                return info;
            }
        }

        /// <summary>diffuse_tokenize(): CLIP token ids of <paramref name="text"/>,
        /// with start and end tokens, before padding and truncation.</summary>
        public int[] Tokenize(string text)
        {
            if (text == null) throw new ArgumentNullException("text");
            byte[] t = Native.Utf8Z(text);
            var ids = new int[256];
            while (true)
            {
                UIntPtr count;
                Status s = Native.diffuse_tokenize(Handle, t, ids, new UIntPtr((uint)ids.Length), out count);
                if (s != Status.Ok) throw new DiffuseException(s, "diffuse_tokenize");
                int n = (int)count.ToUInt64();
                if (n <= ids.Length)
                {
                    Array.Resize(ref ids, n);
                    return ids;
                }
                ids = new int[n];
            }
        }

        /// <summary>A new execution context on this model.</summary>
        public Context CreateContext(ContextOptions options = null) { return new Context(this, options); }

        public void Dispose() { Handle.Dispose(); }
    }

    // ------------------------------------------------------------------
    // Contexts
    // ------------------------------------------------------------------

    /// <summary>Options of diffuse_ctx_create(); null members keep the library default.</summary>
    public sealed class ContextOptions
    {
        public Device? Device;
        public int? DeviceIndex;
        /// <summary>CPU threads; 0 = all cores.</summary>
        public int? Threads;
        public Precision? Precision;
        /// <summary>Working memory in bytes; 0 = no limit.</summary>
        public ulong? MemoryBudget;
        public LogCallback Log;
        public LogLevel LogLevel = LogLevel.Warn;
    }

    /// <summary>Options of diffuse_generate(); null members keep the library default.</summary>
    public sealed class GenerateOptions
    {
        public string NegativePrompt;
        public int? Count;
        public int? Width;
        public int? Height;
        public int? Steps;
        public float? GuidanceScale;
        public float? GuidanceRescale;
        public Sampler? Sampler;
        public ulong? Seed;
        public int? ClipSkip;
        public OutputFormat? Output;
        public bool TileX;
        public bool TileY;
    }

    /// <summary>Options of diffuse_edit(); null members keep the library default.</summary>
    public sealed class EditOptions
    {
        /// <summary>null: the image's alpha marks the edit (alpha 0 = edit).</summary>
        public Image Mask;
        public string NegativePrompt;
        public int? Count;
        public int? Steps;
        public float? GuidanceScale;
        public float? Strength;
        public Sampler? Sampler;
        public ulong? Seed;
        public float? MaskFeather;
        public OutputFormat? Output;
    }

    /// <summary>Options of diffuse_variation(); null members keep the library default.</summary>
    public sealed class VariationOptions
    {
        public string Prompt;
        public string NegativePrompt;
        public int? Count;
        public int? Steps;
        public float? GuidanceScale;
        public float? Strength;
        public Sampler? Sampler;
        public ulong? Seed;
        public OutputFormat? Output;
    }

    /// <summary>One execution state on a model. One call at a time.</summary>
    public sealed class Context : IDisposable
    {
        public ContextHandle Handle { get; private set; }
        public Model Model { get; private set; }
        private readonly CallbackState state;
        private int busy;

        public Context(Model model, ContextOptions options = null)
        {
            if (model == null) throw new ArgumentNullException("model");
            options = options ?? new ContextOptions();
            Model = model;
            state = new CallbackState { Log = options.Log };
            bool added = false;
            GCHandle gch = GCHandle.Alloc(state);
            ContextHandle h = null;
            try
            {
                model.Handle.DangerousAddRef(ref added);
                using (var p = new NativeParams<Native.CtxParams>(Native.diffuse_ctx_params_init))
                {
                    if (options.Device.HasValue) p.Value.device = options.Device.Value;
                    if (options.DeviceIndex.HasValue) p.Value.device_index = options.DeviceIndex.Value;
                    if (options.Threads.HasValue) p.Value.n_threads = options.Threads.Value;
                    if (options.Precision.HasValue) p.Value.precision = options.Precision.Value;
                    if (options.MemoryBudget.HasValue) p.Value.memory_budget = options.MemoryBudget.Value;
                    p.Value.progress_fn = Callbacks.ProgressPtr;
                    p.Value.progress_user = GCHandle.ToIntPtr(gch);
                    if (options.Log != null)
                    {
                        p.Value.log_fn = Callbacks.LogPtr;
                        p.Value.log_user = GCHandle.ToIntPtr(gch);
                        p.Value.log_level = options.LogLevel;
                    }
                    Status s = Native.diffuse_ctx_create(model.Handle, p.Pointer, out h);
                    if (s != Status.Ok || h == null || h.IsInvalid)
                    {
                        if (h != null) h.Dispose();
                        throw new DiffuseException(s, "diffuse_ctx_create failed");
                    }
                    // From here the handle owns the model reference and the
                    // callback state; ReleaseHandle gives both back.
                    h.Attach(model.Handle, gch);
                    Handle = h;
                }
            }
            catch
            {
                if (Handle == null)
                {
                    if (gch.IsAllocated) gch.Free();
                    if (added) model.Handle.DangerousRelease();
                }
                throw;
            }
        }

        /// <summary>diffuse_ctx_last_error(): message of the last failed call.</summary>
        public string LastError { get { return Native.Utf8ToString(Native.diffuse_ctx_last_error(Handle)); } }

        private delegate Status Call(IntPtr paramsPtr, out IntPtr images);

        private Image[] Run(Call call, IntPtr paramsPtr, IProgress<Progress> progress, CancellationToken token)
        {
            if (Handle.IsClosed) throw new ObjectDisposedException("Context");
            if (Interlocked.CompareExchange(ref busy, 1, 0) != 0)
                throw new DiffuseException(Status.Busy, "another call is running on this context");
            try
            {
                token.ThrowIfCancellationRequested();
                var run = new RunState { Progress = progress, Token = token };
                state.Run = run;
                IntPtr images;
                Status s;
                try { s = call(paramsPtr, out images); }
                finally { state.Run = null; }
                if (s == Status.Ok) return Image.TakeAll(images);
                Native.diffuse_images_free(images);
                if (run.Error != null) run.Error.Throw();
                if (s == Status.Cancelled && token.IsCancellationRequested)
                    throw new OperationCanceledException(token);
                throw new DiffuseException(s, LastError);
            }
            finally { Interlocked.Exchange(ref busy, 0); }
        }

        private static OutputFormat Fmt(OutputFormat? o, OutputFormat d) { return o.HasValue ? o.Value : d; }

        /// <summary>diffuse_generate(): text to image, blocking. Progress is
        /// reported on this thread; a cancelled token stops the run within one
        /// step and throws OperationCanceledException.</summary>
        public Image[] Generate(string prompt, GenerateOptions options = null, IProgress<Progress> progress = null,
            CancellationToken token = default(CancellationToken))
        {
            if (prompt == null) throw new ArgumentNullException("prompt");
            var o = options ?? new GenerateOptions();
            using (var p = new NativeParams<Native.GenerateParams>(Native.diffuse_generate_params_init))
            {
                p.Value.prompt = p.String(prompt);
                p.Value.negative_prompt = p.String(o.NegativePrompt);
                if (o.Count.HasValue) p.Value.n_images = (uint)o.Count.Value;
                if (o.Width.HasValue) p.Value.width = (uint)o.Width.Value;
                if (o.Height.HasValue) p.Value.height = (uint)o.Height.Value;
                if (o.Steps.HasValue) p.Value.steps = (uint)o.Steps.Value;
                if (o.GuidanceScale.HasValue) p.Value.guidance_scale = o.GuidanceScale.Value;
                if (o.GuidanceRescale.HasValue) p.Value.guidance_rescale = o.GuidanceRescale.Value;
                if (o.Sampler.HasValue) p.Value.sampler = o.Sampler.Value;
                if (o.Seed.HasValue) p.Value.seed = o.Seed.Value;
                if (o.ClipSkip.HasValue) p.Value.clip_skip = (uint)o.ClipSkip.Value;
                p.Value.output = Fmt(o.Output, p.Value.output);
                p.Value.tile_x = o.TileX ? 1u : 0u;
                p.Value.tile_y = o.TileY ? 1u : 0u;
                return Run((IntPtr pp, out IntPtr im) => Native.diffuse_generate(Handle, pp, out im), p.Pointer,
                    progress, token);
            }
        }

        /// <summary>Generate on a thread-pool thread (Task.Run).</summary>
        public Task<Image[]> GenerateAsync(string prompt, GenerateOptions options = null,
            IProgress<Progress> progress = null, CancellationToken token = default(CancellationToken))
        {
            return Task.Run(() => Generate(prompt, options, progress, token), token);
        }

        /// <summary>diffuse_edit(): repaint the masked part of an image, blocking.</summary>
        public Image[] Edit(Image image, string prompt, EditOptions options = null, IProgress<Progress> progress = null,
            CancellationToken token = default(CancellationToken))
        {
            if (image == null) throw new ArgumentNullException("image");
            if (prompt == null) throw new ArgumentNullException("prompt");
            var o = options ?? new EditOptions();
            using (var img = new Image.Pinned(image))
            using (var mask = o.Mask != null ? new Image.Pinned(o.Mask) : null)
            using (var p = new NativeParams<Native.EditParams>(Native.diffuse_edit_params_init))
            {
                p.Value.image = img.Pointer;
                p.Value.mask = mask != null ? mask.Pointer : IntPtr.Zero;
                p.Value.prompt = p.String(prompt);
                p.Value.negative_prompt = p.String(o.NegativePrompt);
                if (o.Count.HasValue) p.Value.n_images = (uint)o.Count.Value;
                if (o.Steps.HasValue) p.Value.steps = (uint)o.Steps.Value;
                if (o.GuidanceScale.HasValue) p.Value.guidance_scale = o.GuidanceScale.Value;
                if (o.Strength.HasValue) p.Value.strength = o.Strength.Value;
                if (o.Sampler.HasValue) p.Value.sampler = o.Sampler.Value;
                if (o.Seed.HasValue) p.Value.seed = o.Seed.Value;
                if (o.MaskFeather.HasValue) p.Value.mask_feather = o.MaskFeather.Value;
                p.Value.output = Fmt(o.Output, p.Value.output);
                return Run((IntPtr pp, out IntPtr im) => Native.diffuse_edit(Handle, pp, out im), p.Pointer,
                    progress, token);
            }
        }

        /// <summary>Edit on a thread-pool thread (Task.Run).</summary>
        public Task<Image[]> EditAsync(Image image, string prompt, EditOptions options = null,
            IProgress<Progress> progress = null, CancellationToken token = default(CancellationToken))
        {
            return Task.Run(() => Edit(image, prompt, options, progress, token), token);
        }

        /// <summary>diffuse_variation(): variations of an image, blocking.</summary>
        public Image[] Variation(Image image, VariationOptions options = null, IProgress<Progress> progress = null,
            CancellationToken token = default(CancellationToken))
        {
            if (image == null) throw new ArgumentNullException("image");
            var o = options ?? new VariationOptions();
            using (var img = new Image.Pinned(image))
            using (var p = new NativeParams<Native.VariationParams>(Native.diffuse_variation_params_init))
            {
                p.Value.image = img.Pointer;
                p.Value.prompt = p.String(o.Prompt);
                p.Value.negative_prompt = p.String(o.NegativePrompt);
                if (o.Count.HasValue) p.Value.n_images = (uint)o.Count.Value;
                if (o.Steps.HasValue) p.Value.steps = (uint)o.Steps.Value;
                if (o.GuidanceScale.HasValue) p.Value.guidance_scale = o.GuidanceScale.Value;
                if (o.Strength.HasValue) p.Value.strength = o.Strength.Value;
                if (o.Sampler.HasValue) p.Value.sampler = o.Sampler.Value;
                if (o.Seed.HasValue) p.Value.seed = o.Seed.Value;
                p.Value.output = Fmt(o.Output, p.Value.output);
                return Run((IntPtr pp, out IntPtr im) => Native.diffuse_variation(Handle, pp, out im), p.Pointer,
                    progress, token);
            }
        }

        /// <summary>Variation on a thread-pool thread (Task.Run).</summary>
        public Task<Image[]> VariationAsync(Image image, VariationOptions options = null,
            IProgress<Progress> progress = null, CancellationToken token = default(CancellationToken))
        {
            return Task.Run(() => Variation(image, options, progress, token), token);
        }

        /// <summary>Frees the context (after any running call returns is the
        /// caller's job: do not dispose while a call runs).</summary>
        public void Dispose() { Handle.Dispose(); }
    }
}
