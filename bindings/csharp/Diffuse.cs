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
// runs one call or job at a time (a second concurrent call or job start
// throws DiffuseException with Status.Busy, at once). Generate/Edit/Variation
// block the calling thread.
//
// Jobs (no callbacks needed, so they suit Unity/IL2CPP frame loops):
// StartGenerate/StartEdit/StartVariation return a Job at once; the library
// runs the call on a worker thread of its own. Each frame, Job.Poll() gives
// State, Stage, Step and Total without blocking; Job.Wait(ms) blocks up to a
// timeout; Job.Cancel() (any thread) stops it within one step; Job.Result()
// returns the images once it has finished. Dispose the Job (it cancels a job
// still running). The library copies the parameters (strings and input
// pixels) at the start, so nothing passed in has to stay alive.
//
// The *Async variants are built on jobs: they start a job, poll it every
// Context.PollInterval (Task.Delay) without occupying a thread, report each
// new step/total through IProgress<Progress>, cancel the job
// (diffuse_job_cancel) when the CancellationToken is cancelled - the run
// stops within one step and the task ends with OperationCanceledException -
// and then fetch the result. The context stays usable afterwards.
//
// Previews: Context.SetPreview(callback, everySteps) delivers a small RGB
// image of the sample every k denoising steps, on the thread that runs the
// call (a job's worker thread). An exception thrown by the callback never
// reaches native code: it cancels the run and is rethrown by the blocking
// call or by Job.Result().
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

    /// <summary>diffuse_job_state: where an asynchronous job stands.</summary>
    public enum JobState : int
    {
        /// <summary>Started; the worker has not begun the run.</summary>
        Queued = 0,
        Running = 1,
        /// <summary>Finished with success; Job.Result() returns the images.</summary>
        Done = 2,
        /// <summary>Finished with an error (Job.Result() throws it).</summary>
        Failed = 3,
        /// <summary>Finished cancelled.</summary>
        Cancelled = 4,
    }

    public enum Stage : int { Load = 0, Text = 1, Encode = 2, Denoise = 3, Decode = 4 }

    public enum WeightType : int { Auto = 0, F32 = 1, F16 = 2, BF16 = 3 }

    public enum ModelFamily : int { Unknown = 0, SD1 = 1, SD2 = 2 }

    public enum Device : int { Auto = 0, Cpu = 1, Cuda = 2 }

    public enum Precision : int { Auto = 0, F32 = 1, F16 = 2, BF16 = 3 }

    /// <summary>diffuse_operation: which call a memory estimate is for (since 0.3).</summary>
    public enum Operation : int { Generate = 0, Edit = 1, Variation = 2 }

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

    /// <summary>diffuse_job_status: a snapshot of a job, from Job.Poll().</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct JobStatus
    {
        public uint StructSize;
        public JobState State;
        /// <summary>Stage of the latest progress report (Load before the first).</summary>
        public Stage Stage;
        /// <summary>Steps done in this stage, 0..Total.</summary>
        public uint Step;
        public uint Total;
        public uint ImageIndex;
        public uint ImageCount;
        /// <summary>Seconds since the run started, at the latest report.</summary>
        public double ElapsedSeconds;

        /// <summary>Done, Failed or Cancelled.</summary>
        public bool IsFinished
        {
            get { return State == JobState.Done || State == JobState.Failed || State == JobState.Cancelled; }
        }

        /// <summary>The same facts as a Progress (for IProgress&lt;Progress&gt;).</summary>
        public Progress ToProgress()
        {
            return new Progress
            {
                StructSize = (uint)Marshal.SizeOf(typeof(Progress)), Stage = Stage, Step = Step, Total = Total,
                ImageIndex = ImageIndex, ImageCount = ImageCount, ElapsedSeconds = ElapsedSeconds,
            };
        }

        public override string ToString()
        {
            return string.Format("{0}: {1} {2}/{3} (image {4} of {5}, {6:F2} s)", State, Stage, Step, Total,
                ImageIndex + 1, ImageCount, ElapsedSeconds);
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
        /// <summary>Bytes of weights as stored on disk.</summary>
        public ulong WeightBytes;
        /// <summary>How most weights (by bytes) are stored in the files: F32,
        /// F16 or BF16 (since 0.3).</summary>
        public WeightType WeightDtype;
        /// <summary>Host memory the loaded model holds once every weight has
        /// been used (since 0.3; the model part of EstimateMemory).</summary>
        public ulong HostBytes;
    }

    /// <summary>diffuse_memory_estimate: what Model.EstimateMemory reports, in
    /// bytes (since 0.3). HostBytes is the sum of the four parts before it.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct MemoryEstimate
    {
        public uint StructSize;
        /// <summary>The loaded model (ModelInfo.HostBytes).</summary>
        public ulong ModelHostBytes;
        /// <summary>The context's working memory for this call, kept and reused by its next calls.</summary>
        public ulong ContextHostBytes;
        /// <summary>Temporary buffers of the call.</summary>
        public ulong RunHostBytes;
        /// <summary>The returned images.</summary>
        public ulong OutputBytes;
        /// <summary>Peak host memory of a process that loads the model and makes this call.</summary>
        public ulong HostBytes;
        /// <summary>Device memory (0 on the CPU).</summary>
        public ulong DeviceBytes;
        /// <summary>1: the VAE runs in tiles at these settings.</summary>
        public int VaeTiled;
        /// <summary>0: the call would fail with OutOfMemory under the memory budget.</summary>
        public int Fits;

        public override string ToString()
        {
            return string.Format("host {0} B (model {1}, context {2}, run {3}, output {4}), device {5} B{6}{7}",
                HostBytes, ModelHostBytes, ContextHostBytes, RunHostBytes, OutputBytes, DeviceBytes,
                VaeTiled != 0 ? ", VAE tiled" : "", Fits != 0 ? "" : ", does not fit the budget");
        }
    }

    /// <summary>diffuse_ctx_memory (since 0.4): what a context holds.
    /// DeviceBytes and DevicePeakBytes are CUDA device memory (its arena and
    /// its copy of the weights); HostBytes its host arena (0 on CUDA).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct ContextMemory
    {
        public uint StructSize;
        public Device Device;
        public ulong MemoryBudget;
        public ulong HostBytes;
        public ulong DeviceBytes;
        public ulong DevicePeakBytes;
    }

    /// <summary>diffuse_device_info: one device a context can run on (since 0.3).</summary>
    public sealed class DeviceInfo
    {
        /// <summary>Cpu or Cuda.</summary>
        public Device Device { get; internal set; }
        /// <summary>Ordinal within its kind (0 for the CPU).</summary>
        public int Index { get; internal set; }
        /// <summary>A context can run on it now.</summary>
        public bool Available { get; internal set; }
        /// <summary>E.g. the CPU model name.</summary>
        public string Name { get; internal set; }
        /// <summary>Total memory (host RAM for the CPU).</summary>
        public ulong MemoryBytes { get; internal set; }
        /// <summary>CPU: cores the library would use; 0 for GPUs.</summary>
        public uint Threads { get; internal set; }
        /// <summary>Why it is unavailable, or how it was found.</summary>
        public string Note { get; internal set; }

        internal static DeviceInfo From(Native.DeviceInfo n)
        {
            return new DeviceInfo
            {
                Device = n.device, Index = n.index, Available = n.available != 0, Name = Native.Utf8Z(n.name),
                MemoryBytes = n.memory_bytes, Threads = n.threads, Note = Native.Utf8Z(n.note),
            };
        }

        public override string ToString()
        {
            return string.Format("{0}:{1} {2} ({3}){4}", Device, Index, Name, Available ? "available" : "unavailable",
                string.IsNullOrEmpty(Note) ? "" : ": " + Note);
        }
    }

    /// <summary>The devices this libdiffuse can use (since 0.3).</summary>
    public static class Devices
    {
        /// <summary>diffuse_list_devices(): the CPU first, then one entry per
        /// GPU the CUDA backend reports; when the CUDA module or driver is
        /// missing, one Cuda entry with Available false says why in Note.</summary>
        public static DeviceInfo[] ListDevices()
        {
            int capacity = 4;
            while (true)
            {
                IntPtr buf = Native.AllocDeviceInfos(capacity);
                try
                {
                    UIntPtr count;
                    Status s = Native.diffuse_list_devices(buf, new UIntPtr((uint)capacity), out count);
                    if (s != Status.Ok) throw new DiffuseException(s, "diffuse_list_devices");
                    int n = (int)count.ToUInt64();
                    if (n <= capacity)
                    {
                        var result = new DeviceInfo[n];
                        for (int i = 0; i < n; i++) result[i] = DeviceInfo.From(Native.ReadDeviceInfo(buf, i));
                        return result;
                    }
                    capacity = n;
                }
                finally { Marshal.FreeHGlobal(buf); }
            }
        }
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
            public IntPtr progress_fn;   // since 0.3
            public IntPtr progress_user; // since 0.3
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
            public IntPtr output_images; // since 0.3: diffuse_image[n_images] or NULL
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
            public IntPtr output_images; // since 0.3: diffuse_image[n_images] or NULL
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
            public IntPtr output_images; // since 0.3: diffuse_image[n_images] or NULL
        }

        [StructLayout(LayoutKind.Sequential)]
        public struct MemoryQuery
        {
            public uint struct_size;
            public Operation operation;
            public uint width;
            public uint height;
            public uint n_images;
            public float guidance_scale;
            public PixelFormat format;
            public Device device;
            public ulong memory_budget;
        }

        [StructLayout(LayoutKind.Sequential)]
        public struct DeviceInfo
        {
            public uint struct_size;
            public Device device;
            public int index;
            public int available;
            [MarshalAs(UnmanagedType.ByValArray, SizeConst = 128)]
            public byte[] name;
            public ulong memory_bytes;
            public uint threads;
            [MarshalAs(UnmanagedType.ByValArray, SizeConst = 256)]
            public byte[] note;
        }

        /// <summary>Zeroed native memory for <paramref name="n"/> DeviceInfo
        /// structs, each with struct_size set. Free with FreeHGlobal.</summary>
        internal static IntPtr AllocDeviceInfos(int n)
        {
            int size = Marshal.SizeOf(typeof(DeviceInfo));
            IntPtr buf = Marshal.AllocHGlobal(size * n);
            for (int i = 0; i < size * n; i++) Marshal.WriteByte(buf, i, 0);
            for (int i = 0; i < n; i++) Marshal.WriteInt32(buf, i * size, size);
            return buf;
        }

        internal static DeviceInfo ReadDeviceInfo(IntPtr buf, int i)
        {
            int size = Marshal.SizeOf(typeof(DeviceInfo));
            return (DeviceInfo)Marshal.PtrToStructure(new IntPtr(buf.ToInt64() + (long)i * size), typeof(DeviceInfo));
        }

        /// <summary>The string in a NUL-terminated UTF-8 char array.</summary>
        internal static string Utf8Z(byte[] chars)
        {
            if (chars == null) return "";
            int n = Array.IndexOf(chars, (byte)0);
            return Encoding.UTF8.GetString(chars, 0, n < 0 ? chars.Length : n);
        }

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern void diffuse_memory_query_init(IntPtr q);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_estimate_memory(ModelHandle model, IntPtr q, ref MemoryEstimate e);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_list_devices(IntPtr infos, UIntPtr capacity, out UIntPtr count);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_ctx_get_device(ContextHandle ctx, out Device requested, IntPtr info);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_ctx_get_memory(ContextHandle ctx, ref ContextMemory memory);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_ctx_set_preview_decode(ContextHandle ctx, uint everySteps);

        /// <summary>void (*diffuse_log_fn)(diffuse_log_level, const char *, void *)</summary>
        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        public delegate void LogFn(LogLevel level, IntPtr message, IntPtr user);

        /// <summary>int (*diffuse_progress_fn)(const diffuse_progress *, void *)</summary>
        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        public delegate int ProgressFn(IntPtr progress, IntPtr user);

        /// <summary>void (*diffuse_preview_fn)(const diffuse_image *, const diffuse_progress *, void *)</summary>
        [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
        public delegate void PreviewFn(IntPtr image, IntPtr progress, IntPtr user);

        /// <summary>diffuse_job_wait's "no limit".</summary>
        public const uint WaitForever = 0xFFFFFFFFu;

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_job_start_generate(ContextHandle ctx, IntPtr p, out JobHandle job);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_job_start_edit(ContextHandle ctx, IntPtr p, out JobHandle job);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_job_start_variation(ContextHandle ctx, IntPtr p, out JobHandle job);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_job_poll(JobHandle job, ref JobStatus status);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_job_wait(JobHandle job, uint timeoutMs);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_job_cancel(JobHandle job);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_job_result(JobHandle job, out IntPtr images);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern IntPtr diffuse_job_last_error(JobHandle job);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern void diffuse_job_free(IntPtr job);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl)]
        public static extern Status diffuse_ctx_set_preview(ContextHandle ctx, IntPtr fn, IntPtr user,
            uint everyKSteps);

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

        /// <summary>The callback state's GCHandle as the callbacks' user pointer.</summary>
        internal IntPtr StatePointer { get { return GCHandle.ToIntPtr(state); } }

        protected override bool ReleaseHandle()
        {
            Native.diffuse_ctx_free(handle);
            if (state.IsAllocated) state.Free();
            if (model != null) model.DangerousRelease();
            model = null;
            return true;
        }
    }

    /// <summary>Owns a diffuse_job*; releases it with diffuse_job_free (which
    /// cancels a job still running and joins its worker, about one step).
    /// While a P/Invoke call uses the handle (e.g. a Wait on another thread)
    /// the release is deferred until that call returns.</summary>
    public sealed class JobHandle : SafeHandleZeroOrMinusOneIsInvalid
    {
        public JobHandle() : base(true) { }

        protected override bool ReleaseHandle()
        {
            Native.diffuse_job_free(handle);
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

    /// <summary>Receives a preview: a small RGB8 image of the current sample
    /// (latent size) and the progress of its denoising step.</summary>
    public delegate void PreviewCallback(Image preview, Progress progress);

    /// <summary>What progress_user / log_user point at (through a GCHandle).</summary>
    internal sealed class CallbackState
    {
        public LogCallback Log;
        public volatile RunState Run;
        public volatile PreviewCallback Preview;
        private readonly object gate = new object();
        private ExceptionDispatchInfo previewError; // first exception a preview callback threw in this run

        /// <summary>True once a preview callback threw during the current run:
        /// the next progress report then cancels the run.</summary>
        public bool HasPreviewError { get { lock (gate) return previewError != null; } }

        public void SetPreviewError(ExceptionDispatchInfo e)
        {
            lock (gate)
                if (previewError == null) previewError = e;
        }

        /// <summary>Takes (and clears) a preview callback's exception.</summary>
        public ExceptionDispatchInfo TakePreviewError()
        {
            lock (gate)
            {
                ExceptionDispatchInfo e = previewError;
                previewError = null;
                return e;
            }
        }
    }

    internal static class Callbacks
    {
        // Static delegate instances: never collected, so the function pointers
        // handed to the library stay valid for every context's lifetime.
        internal static readonly Native.ProgressFn ProgressDelegate = OnProgress;
        internal static readonly Native.LogFn LogDelegate = OnLog;
        internal static readonly IntPtr ProgressPtr = Marshal.GetFunctionPointerForDelegate(ProgressDelegate);
        internal static readonly IntPtr LogPtr = Marshal.GetFunctionPointerForDelegate(LogDelegate);

        internal static readonly Native.PreviewFn PreviewDelegate = OnPreview;
        internal static readonly IntPtr PreviewPtr = Marshal.GetFunctionPointerForDelegate(PreviewDelegate);

        [MonoPInvokeCallback(typeof(Native.ProgressFn))]
        private static int OnProgress(IntPtr progress, IntPtr user)
        {
            RunState run = null;
            try
            {
                var st = (CallbackState)GCHandle.FromIntPtr(user).Target;
                if (st.HasPreviewError) return 1;
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

        [MonoPInvokeCallback(typeof(Native.PreviewFn))]
        private static void OnPreview(IntPtr image, IntPtr progress, IntPtr user)
        {
            CallbackState st = null;
            try
            {
                st = (CallbackState)GCHandle.FromIntPtr(user).Target;
                PreviewCallback fn = st.Preview;
                if (fn == null || st.HasPreviewError) return;
                var n = (Native.Image)Marshal.PtrToStructure(image, typeof(Native.Image));
                var p = (Progress)Marshal.PtrToStructure(progress, typeof(Progress));
                fn(new Image(n, 0), p);
            }
            catch (Exception e)
            {
                // Kept for the call (or Job.Result) to rethrow; the progress
                // report that follows this preview cancels the run.
                if (st != null) st.SetPreviewError(ExceptionDispatchInfo.Capture(e));
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

        /// <summary>diffuse_estimate_memory() (since 0.3): the memory a call
        /// with these settings needs, from the same plan the call makes;
        /// nothing runs. Throws DiffuseException: InvalidArgument (sizes not
        /// multiples of the VAE scale factor, counts out of range),
        /// Unsupported (an operation the model cannot run), NoDevice (Cuda).</summary>
        public MemoryEstimate EstimateMemory(MemoryQueryOptions options = null)
        {
            options = options ?? new MemoryQueryOptions();
            using (var q = new NativeParams<Native.MemoryQuery>(Native.diffuse_memory_query_init))
            {
                if (options.Operation.HasValue) q.Value.operation = options.Operation.Value;
                if (options.Width.HasValue) q.Value.width = checked((uint)options.Width.Value);
                if (options.Height.HasValue) q.Value.height = checked((uint)options.Height.Value);
                if (options.Count.HasValue) q.Value.n_images = checked((uint)options.Count.Value);
                if (options.GuidanceScale.HasValue) q.Value.guidance_scale = options.GuidanceScale.Value;
                if (options.Format.HasValue) q.Value.format = options.Format.Value;
                if (options.Device.HasValue) q.Value.device = options.Device.Value;
                if (options.MemoryBudget.HasValue) q.Value.memory_budget = options.MemoryBudget.Value;
                var e = new MemoryEstimate { StructSize = (uint)Marshal.SizeOf(typeof(MemoryEstimate)) };
                Status s = Native.diffuse_estimate_memory(Handle, q.Pointer, ref e);
                if (s != Status.Ok)
                    throw new DiffuseException(s, string.Format("diffuse_estimate_memory ({0} {1}x{2}, {3} images)",
                        q.Value.operation, q.Value.width, q.Value.height, q.Value.n_images));
                return e;
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

    /// <summary>Settings of a call to estimate (diffuse_memory_query, since
    /// 0.3); null members keep the library default.</summary>
    public sealed class MemoryQueryOptions
    {
        /// <summary>Default Generate.</summary>
        public Operation? Operation;
        /// <summary>Output (or input image) pixels; 0 or null = the model's native size.</summary>
        public int? Width;
        public int? Height;
        /// <summary>Images, 1..16; default 1.</summary>
        public int? Count;
        /// <summary>&gt; 1 (default 7.5) estimates a run with classifier-free guidance.</summary>
        public float? GuidanceScale;
        /// <summary>Format of the returned images; default RGB8.</summary>
        public PixelFormat? Format;
        /// <summary>Default Auto.</summary>
        public Device? Device;
        /// <summary>The context's memory budget; 0 = none.</summary>
        public ulong? MemoryBudget;
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
        private delegate Status StartCall(IntPtr paramsPtr, out JobHandle job);

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
                state.TakePreviewError();
                IntPtr images;
                Status s;
                try { s = call(paramsPtr, out images); }
                finally { state.Run = null; }
                if (s == Status.Busy) // a job runs; the context's last error is not changed then
                    throw new DiffuseException(s, "a job is running on this context");
                ExceptionDispatchInfo previewError = state.TakePreviewError();
                if (s == Status.Ok) return Image.TakeAll(images);
                Native.diffuse_images_free(images);
                if (run.Error != null) run.Error.Throw();
                if (previewError != null) previewError.Throw();
                if (s == Status.Cancelled && token.IsCancellationRequested)
                    throw new OperationCanceledException(token);
                throw new DiffuseException(s, LastError);
            }
            finally { Interlocked.Exchange(ref busy, 0); }
        }

        private Job Start(StartCall call, IntPtr paramsPtr)
        {
            if (Handle.IsClosed) throw new ObjectDisposedException("Context");
            if (Interlocked.CompareExchange(ref busy, 1, 0) != 0)
                throw new DiffuseException(Status.Busy, "a call is running on this context");
            try
            {
                JobHandle h;
                // A fresh run starts without an earlier preview error; put back
                // if the library refuses (BUSY: it belongs to the running job).
                ExceptionDispatchInfo earlier = state.TakePreviewError();
                Status s = call(paramsPtr, out h);
                if (s != Status.Ok || h == null || h.IsInvalid)
                {
                    if (earlier != null) state.SetPreviewError(earlier);
                    if (h != null) h.Dispose();
                    if (s == Status.Busy) throw new DiffuseException(s, "a job or call is running on this context");
                    throw new DiffuseException(s, LastError);
                }
                return new Job(this, h, state);
            }
            finally { Interlocked.Exchange(ref busy, 0); }
        }

        private static OutputFormat Fmt(OutputFormat? o, OutputFormat d) { return o.HasValue ? o.Value : d; }

        private static void Fill(NativeParams<Native.GenerateParams> p, string prompt, GenerateOptions o)
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
        }

        private static void Fill(NativeParams<Native.EditParams> p, Image.Pinned img, Image.Pinned mask,
            string prompt, EditOptions o)
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
        }

        private static void Fill(NativeParams<Native.VariationParams> p, Image.Pinned img, VariationOptions o)
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
        }

        /// <summary>diffuse_generate(): text to image, blocking. Progress is
        /// reported on this thread; a cancelled token stops the run within one
        /// step and throws OperationCanceledException.</summary>
        public Image[] Generate(string prompt, GenerateOptions options = null, IProgress<Progress> progress = null,
            CancellationToken token = default(CancellationToken))
        {
            if (prompt == null) throw new ArgumentNullException("prompt");
            using (var p = new NativeParams<Native.GenerateParams>(Native.diffuse_generate_params_init))
            {
                Fill(p, prompt, options ?? new GenerateOptions());
                return Run((IntPtr pp, out IntPtr im) => Native.diffuse_generate(Handle, pp, out im), p.Pointer,
                    progress, token);
            }
        }

        /// <summary>diffuse_job_start_generate(): starts Generate as a job and
        /// returns at once (throws DiffuseException: Busy when a job or call
        /// runs on this context, InvalidArgument for bad options). Poll the
        /// Job each frame; no callback is involved.</summary>
        public Job StartGenerate(string prompt, GenerateOptions options = null)
        {
            if (prompt == null) throw new ArgumentNullException("prompt");
            using (var p = new NativeParams<Native.GenerateParams>(Native.diffuse_generate_params_init))
            {
                Fill(p, prompt, options ?? new GenerateOptions());
                // The library copies the params and strings before this returns.
                return Start((IntPtr pp, out JobHandle j) => Native.diffuse_job_start_generate(Handle, pp, out j),
                    p.Pointer);
            }
        }

        /// <summary>Generate as a job (StartGenerate), polled every
        /// PollInterval without blocking a thread: progress is reported from
        /// the polls (each new stage/step), the token cancels the job
        /// (diffuse_job_cancel) and the task then ends with
        /// OperationCanceledException.</summary>
        public Task<Image[]> GenerateAsync(string prompt, GenerateOptions options = null,
            IProgress<Progress> progress = null, CancellationToken token = default(CancellationToken))
        {
            if (prompt == null) throw new ArgumentNullException("prompt");
            return RunJobAsync(() => StartGenerate(prompt, options), progress, token);
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
                Fill(p, img, mask, prompt, o);
                return Run((IntPtr pp, out IntPtr im) => Native.diffuse_edit(Handle, pp, out im), p.Pointer,
                    progress, token);
            }
        }

        /// <summary>diffuse_job_start_edit(): starts Edit as a job. The image
        /// and mask pixels are copied by the library before this returns.</summary>
        public Job StartEdit(Image image, string prompt, EditOptions options = null)
        {
            if (image == null) throw new ArgumentNullException("image");
            if (prompt == null) throw new ArgumentNullException("prompt");
            var o = options ?? new EditOptions();
            using (var img = new Image.Pinned(image))
            using (var mask = o.Mask != null ? new Image.Pinned(o.Mask) : null)
            using (var p = new NativeParams<Native.EditParams>(Native.diffuse_edit_params_init))
            {
                Fill(p, img, mask, prompt, o);
                return Start((IntPtr pp, out JobHandle j) => Native.diffuse_job_start_edit(Handle, pp, out j),
                    p.Pointer);
            }
        }

        /// <summary>Edit as a polled job, as GenerateAsync.</summary>
        public Task<Image[]> EditAsync(Image image, string prompt, EditOptions options = null,
            IProgress<Progress> progress = null, CancellationToken token = default(CancellationToken))
        {
            if (image == null) throw new ArgumentNullException("image");
            if (prompt == null) throw new ArgumentNullException("prompt");
            return RunJobAsync(() => StartEdit(image, prompt, options), progress, token);
        }

        /// <summary>diffuse_variation(): variations of an image, blocking.</summary>
        public Image[] Variation(Image image, VariationOptions options = null, IProgress<Progress> progress = null,
            CancellationToken token = default(CancellationToken))
        {
            if (image == null) throw new ArgumentNullException("image");
            using (var img = new Image.Pinned(image))
            using (var p = new NativeParams<Native.VariationParams>(Native.diffuse_variation_params_init))
            {
                Fill(p, img, options ?? new VariationOptions());
                return Run((IntPtr pp, out IntPtr im) => Native.diffuse_variation(Handle, pp, out im), p.Pointer,
                    progress, token);
            }
        }

        /// <summary>diffuse_job_start_variation(): starts Variation as a job.
        /// The image's pixels are copied by the library before this returns.</summary>
        public Job StartVariation(Image image, VariationOptions options = null)
        {
            if (image == null) throw new ArgumentNullException("image");
            using (var img = new Image.Pinned(image))
            using (var p = new NativeParams<Native.VariationParams>(Native.diffuse_variation_params_init))
            {
                Fill(p, img, options ?? new VariationOptions());
                return Start((IntPtr pp, out JobHandle j) => Native.diffuse_job_start_variation(Handle, pp, out j),
                    p.Pointer);
            }
        }

        /// <summary>Variation as a polled job, as GenerateAsync.</summary>
        public Task<Image[]> VariationAsync(Image image, VariationOptions options = null,
            IProgress<Progress> progress = null, CancellationToken token = default(CancellationToken))
        {
            if (image == null) throw new ArgumentNullException("image");
            return RunJobAsync(() => StartVariation(image, options), progress, token);
        }

        private int pollIntervalMs = 10;

        /// <summary>How often the *Async methods poll their job (default 10 ms).</summary>
        public TimeSpan PollInterval
        {
            get { return TimeSpan.FromMilliseconds(pollIntervalMs); }
            set
            {
                if (value.TotalMilliseconds < 1 || value.TotalMilliseconds > int.MaxValue)
                    throw new ArgumentOutOfRangeException("value");
                pollIntervalMs = (int)value.TotalMilliseconds;
            }
        }

        /// <summary>Starts a job and polls it to the end on the thread pool
        /// (Task.Delay between polls; no thread is blocked).</summary>
        private async Task<Image[]> RunJobAsync(Func<Job> start, IProgress<Progress> progress,
            CancellationToken token)
        {
            token.ThrowIfCancellationRequested();
            await Task.Yield(); // errors of the start arrive through the task, as they did with Task.Run
            using (Job job = start())
            using (token.Register(job.TryCancel))
            {
                JobStatus last = default(JobStatus);
                bool reported = false;
                while (true)
                {
                    JobStatus s = job.Poll();
                    bool changed = !reported || s.Stage != last.Stage || s.Step != last.Step ||
                                   s.Total != last.Total || s.ImageIndex != last.ImageIndex;
                    if (progress != null && s.State != JobState.Queued && s.Total > 0 && changed)
                    {
                        progress.Report(s.ToProgress());
                        last = s;
                        reported = true;
                    }
                    if (s.IsFinished) break;
                    await Task.Delay(pollIntervalMs).ConfigureAwait(false);
                }
                try
                {
                    return job.Result();
                }
                catch (DiffuseException e)
                {
                    if (e.Status == Status.Cancelled && token.IsCancellationRequested)
                        throw new OperationCanceledException(e.Message, e, token);
                    throw;
                }
            }
        }

        /// <summary>diffuse_ctx_set_preview(): every <paramref name="everySteps"/>
        /// denoising steps (k, 2k, ... and the last) of this context's calls
        /// and jobs, <paramref name="preview"/> receives a small RGB8 image of
        /// the current sample at latent size (a cheap linear projection of the
        /// latents, not a VAE decode) and the step's progress. It runs on the
        /// thread that runs the call (a job's worker thread), through a static
        /// [MonoPInvokeCallback] trampoline, so it works under IL2CPP. An
        /// exception thrown in it cancels the run and is rethrown by the
        /// blocking call or Job.Result(); it never reaches native code. null
        /// turns previews off. Throws DiffuseException: Busy while a job or
        /// call runs, InvalidArgument for everySteps 0.</summary>
        public void SetPreview(PreviewCallback preview, int everySteps = 1)
        {
            if (Handle.IsClosed) throw new ObjectDisposedException("Context");
            if (preview != null && everySteps <= 0) throw new ArgumentOutOfRangeException("everySteps");
            if (Interlocked.CompareExchange(ref busy, 1, 0) != 0)
                throw new DiffuseException(Status.Busy, "a call is running on this context");
            try
            {
                Status s = Native.diffuse_ctx_set_preview(Handle, preview != null ? Callbacks.PreviewPtr : IntPtr.Zero,
                    preview != null ? Handle.StatePointer : IntPtr.Zero, preview != null ? (uint)everySteps : 0u);
                if (s == Status.Busy) throw new DiffuseException(s, "a job or call is running on this context");
                if (s != Status.Ok) throw new DiffuseException(s, LastError);
                state.Preview = preview;
            }
            finally { Interlocked.Exchange(ref busy, 0); }
        }

        /// <summary>diffuse_ctx_set_preview_decode() (since 0.3): every
        /// <paramref name="everySteps"/>-th denoising step (k, 2k, ... and the
        /// last), the preview is a full VAE decode of the current sample's
        /// denoised estimate (output size, RGB8) instead of the cheap
        /// projection; other preview steps keep the projection. 0 (the
        /// default) turns it off. The callback and its interval come from
        /// SetPreview. Throws DiffuseException Busy while a job or call runs.</summary>
        public void SetPreviewDecode(int everySteps)
        {
            if (Handle.IsClosed) throw new ObjectDisposedException("Context");
            if (everySteps < 0) throw new ArgumentOutOfRangeException("everySteps");
            if (Interlocked.CompareExchange(ref busy, 1, 0) != 0)
                throw new DiffuseException(Status.Busy, "a call is running on this context");
            try
            {
                Status s = Native.diffuse_ctx_set_preview_decode(Handle, (uint)everySteps);
                if (s == Status.Busy) throw new DiffuseException(s, "a job or call is running on this context");
                if (s != Status.Ok) throw new DiffuseException(s, LastError);
            }
            finally { Interlocked.Exchange(ref busy, 0); }
        }

        private DeviceInfo GetDevice(out global::Diffuse.Device requested)
        {
            if (Handle.IsClosed) throw new ObjectDisposedException("Context");
            IntPtr buf = Native.AllocDeviceInfos(1);
            try
            {
                Status s = Native.diffuse_ctx_get_device(Handle, out requested, buf);
                if (s != Status.Ok) throw new DiffuseException(s, "diffuse_ctx_get_device");
                return DeviceInfo.From(Native.ReadDeviceInfo(buf, 0));
            }
            finally { Marshal.FreeHGlobal(buf); }
        }

        /// <summary>diffuse_ctx_get_device() (since 0.3): the device this
        /// context runs on (with Auto on a host without a usable GPU, the CPU).</summary>
        public DeviceInfo Device
        {
            get { global::Diffuse.Device requested; return GetDevice(out requested); }
        }

        /// <summary>diffuse_ctx_get_memory() (since 0.4): the memory this
        /// context holds and the most device memory it has held. Throws
        /// DiffuseException (Busy) while a job or call runs on it.</summary>
        public ContextMemory Memory
        {
            get
            {
                var m = new ContextMemory { StructSize = (uint)Marshal.SizeOf(typeof(ContextMemory)) };
                Status s = Native.diffuse_ctx_get_memory(Handle, ref m);
                if (s != Status.Ok) throw new DiffuseException(s, "diffuse_ctx_get_memory");
                return m;
            }
        }

        /// <summary>The device this context's options asked for (Auto, Cpu or Cuda).</summary>
        public global::Diffuse.Device RequestedDevice
        {
            get { global::Diffuse.Device requested; GetDevice(out requested); return requested; }
        }

        /// <summary>Frees the context. A job of it still running is cancelled
        /// first (its Job then reports Cancelled; dispose the Job as well).
        /// Do not dispose while a blocking call runs on another thread.</summary>
        public void Dispose() { Handle.Dispose(); }
    }

    // ------------------------------------------------------------------
    // Jobs
    // ------------------------------------------------------------------

    /// <summary>An asynchronous generate/edit/variation (diffuse_job), from
    /// Context.StartGenerate/StartEdit/StartVariation. Poll, Wait and Cancel
    /// may be called from any thread; no callback is needed (Unity IL2CPP
    /// frame loops just call Poll each frame). Dispose it when done: a job
    /// still running is cancelled and its worker joined (about one step).
    /// A disposed job throws ObjectDisposedException.</summary>
    public sealed class Job : IDisposable
    {
        public JobHandle Handle { get; private set; }
        /// <summary>The context it runs on (kept alive by the job).</summary>
        public Context Context { get; private set; }
        private readonly CallbackState state;
        private readonly object resultGate = new object();
        private Image[] images;

        internal Job(Context ctx, JobHandle handle, CallbackState state)
        {
            Context = ctx;
            Handle = handle;
            this.state = state;
        }

        private JobHandle Checked()
        {
            JobHandle h = Handle;
            if (h.IsClosed) throw new ObjectDisposedException("Job");
            return h;
        }

        /// <summary>diffuse_job_poll(): where the job stands, without blocking.</summary>
        public JobStatus Poll()
        {
            var s = new JobStatus { StructSize = (uint)Marshal.SizeOf(typeof(JobStatus)) };
            Status st = Native.diffuse_job_poll(Checked(), ref s);
            if (st != Status.Ok) throw new DiffuseException(st, "diffuse_job_poll");
            return s;
        }

        /// <summary>Done, Failed or Cancelled (polls).</summary>
        public bool IsFinished { get { return Poll().IsFinished; } }

        /// <summary>diffuse_job_wait(): blocks until the job has finished
        /// (true) or <paramref name="timeoutMs"/> milliseconds have passed
        /// (false). -1 (Timeout.Infinite) waits without limit, 0 just checks.</summary>
        public bool Wait(int timeoutMs = Timeout.Infinite)
        {
            if (timeoutMs < -1) throw new ArgumentOutOfRangeException("timeoutMs");
            Status st = Native.diffuse_job_wait(Checked(), timeoutMs == -1 ? Native.WaitForever : (uint)timeoutMs);
            if (st == Status.Ok) return true;
            if (st == Status.Timeout) return false;
            throw new DiffuseException(st, "diffuse_job_wait");
        }

        /// <summary>diffuse_job_cancel(): asks the job to stop; returns at once.
        /// The run stops within one step and the job ends Cancelled. Harmless
        /// on a finished job and when repeated.</summary>
        public void Cancel()
        {
            Status st = Native.diffuse_job_cancel(Checked());
            if (st != Status.Ok) throw new DiffuseException(st, "diffuse_job_cancel");
        }

        /// <summary>Cancel that ignores a disposed job (for token registrations).</summary>
        internal void TryCancel()
        {
            try { Cancel(); }
            catch (ObjectDisposedException) { }
        }

        /// <summary>diffuse_job_last_error(): message of a failed or cancelled job.</summary>
        public string LastError { get { return Native.Utf8ToString(Native.diffuse_job_last_error(Checked())); } }

        /// <summary>diffuse_job_result(): the images of a finished job, copied
        /// into managed memory (the same array on later calls). Throws
        /// DiffuseException: Busy while the job has not finished (Poll or Wait
        /// first), Cancelled when it was cancelled, or the run's own error with
        /// the library's message; or rethrows a preview callback's exception.</summary>
        public Image[] Result()
        {
            JobHandle h = Checked();
            lock (resultGate)
            {
                if (images != null) return images;
                IntPtr raw;
                Status st = Native.diffuse_job_result(h, out raw);
                if (st == Status.Busy)
                {
                    Native.diffuse_images_free(raw);
                    throw new DiffuseException(st, "the job has not finished yet");
                }
                ExceptionDispatchInfo previewError = st == Status.Ok ? null : state.TakePreviewError();
                if (st == Status.Ok)
                {
                    if (raw == IntPtr.Zero) throw new DiffuseException(Status.Internal, "the job returned no images");
                    images = Image.TakeAll(raw);
                    return images;
                }
                Native.diffuse_images_free(raw);
                if (previewError != null) previewError.Throw();
                throw new DiffuseException(st, LastError);
            }
        }

        /// <summary>Cancels the job if it still runs and frees it.</summary>
        public void Dispose()
        {
            if (!Handle.IsClosed) TryCancel(); // lets Waits on other threads return
            Handle.Dispose();
        }
    }
}
