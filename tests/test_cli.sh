#!/usr/bin/env bash
# test_cli.sh DIFFUSE MODEL - runs the `diffuse` command on a model (the tiny
# test model) and checks what docs/diffuse-cli.md promises: PNG size and text
# metadata, no overwriting without --force, --from reproducing pixels,
# tokenize/info output, errors and exit codes, Ctrl-C, progress output.
# PNG files are inspected with a few lines of stdlib Python (zlib, struct).
set -u
diffuse=$(realpath "$1"); model=$(realpath "$2")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
unset DIFFUSE_MODEL
failed=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
check() { # DESCRIPTION COMMAND... : passes when the command succeeds
    local what="$1"; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

# png.py: meta FILE KEY | size FILE | pixels FILE | chunk FILE TYPE KEY
#         | write FILE W H gray|rgba (test inputs)
cat >png.py <<'PY'
import struct, sys, zlib, hashlib
def chunks(path):
    d = open(path, 'rb').read()
    assert d[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
    pos = 8
    while pos < len(d):
        n, t = struct.unpack('>I4s', d[pos:pos + 8])
        yield t.decode(), d[pos + 8:pos + 8 + n]
        pos += 12 + n
def text(path):
    out = {}
    for t, b in chunks(path):
        if t == 'tEXt':
            k, v = b.split(b'\0', 1); out[k.decode('latin-1')] = (t, v.decode('latin-1'))
        elif t == 'iTXt':
            k, rest = b.split(b'\0', 1)   # key, compression flag+method, language, translated key, text
            lang_end = rest.index(b'\0', 2); tk_end = rest.index(b'\0', lang_end + 1)
            out[k.decode('latin-1')] = (t, rest[tk_end + 1:].decode('utf-8'))
    return out
cmd, path = sys.argv[1], sys.argv[2]
if cmd == 'meta':
    print(text(path).get(sys.argv[3], ('', '<missing>'))[1])
elif cmd == 'chunk':
    print(text(path).get(sys.argv[3], ('<missing>', ''))[0])
elif cmd == 'size':
    ihdr = next(b for t, b in chunks(path) if t == 'IHDR'); print('%dx%d' % struct.unpack('>II', ihdr[:8]))
elif cmd == 'pixels':
    print(hashlib.sha256(zlib.decompress(b''.join(b for t, b in chunks(path) if t == 'IDAT'))).hexdigest())
elif cmd == 'write':
    w, h, kind = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    ch, ct = (1, 0) if kind == 'gray' else (4, 6)
    rows = b''
    for y in range(h):
        row = bytearray()
        for x in range(w):
            inside = w // 4 <= x < 3 * w // 4 and h // 4 <= y < 3 * h // 4
            row += bytes([255 if inside else 0]) if ch == 1 else bytes([x * 4 % 256, y * 4 % 256, 128, 0 if inside else 255])
        rows += b'\0' + bytes(row)
    def chunk(t, b): return struct.pack('>I', len(b)) + t + b + struct.pack('>I', zlib.crc32(t + b))
    open(path, 'wb').write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, ct, 0, 0, 0))
                           + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))
PY
meta() { python3 png.py meta "$@"; }

# --- generate: file, size, metadata, plain progress lines ------------------
t0=$(date +%s.%N)
"$diffuse" generate "a photo of a cat" --model "$model" --steps 2 --seed 42 --size 64x64 --negative "blurry" \
    --sampler euler -o out.png >gen.out 2>gen.err
rc=$?
echo "generate (2 steps, 64x64): $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s"
check "generate exits 0" [ "$rc" -eq 0 ]
check "generate writes out.png" [ -f out.png ]
check "generate reports the file on stdout" grep -q "^wrote out.png (64x64, seed 42)" gen.out
check "image is 64x64" [ "$(python3 png.py size out.png)" = 64x64 ]
check "diffuse:prompt" [ "$(meta out.png diffuse:prompt)" = "a photo of a cat" ]
check "diffuse:prompt is a tEXt chunk" [ "$(python3 png.py chunk out.png diffuse:prompt)" = tEXt ]
check "diffuse:negative_prompt" [ "$(meta out.png diffuse:negative_prompt)" = blurry ]
check "diffuse:seed" [ "$(meta out.png diffuse:seed)" = 42 ]
check "diffuse:sampler" [ "$(meta out.png diffuse:sampler)" = euler ]
check "diffuse:steps" [ "$(meta out.png diffuse:steps)" = 2 ]
check "diffuse:guidance" [ "$(meta out.png diffuse:guidance)" = 7.5 ]
check "diffuse:size" [ "$(meta out.png diffuse:size)" = 64x64 ]
check "diffuse:model is the model's absolute path" [ "$(meta out.png diffuse:model)" = "$(cd "$model" && pwd -P)" ]
check "diffuse:mode" [ "$(meta out.png diffuse:mode)" = generate ]
check "non-tty progress: plain denoise lines" grep -Eq '^image 1/1: denoise [0-9]+/[0-9]+ \(' gen.err
check "non-tty progress: no carriage returns or escapes" bash -c "! grep -q \$'[\r\033]' gen.err"
check "no temporary file left" bash -c '[ -z "$(ls -A | grep "^\.out")" ]'

# --- never overwrite without --force; fail before generating ----------------
cp out.png keep.png
"$diffuse" generate "something else" --model "$model" --steps 2 -o out.png >ow.out 2>ow.err
rc=$?
check "existing output: exit 1" [ "$rc" -eq 1 ]
check "existing output: says so" grep -q "out.png exists; pass --force" ow.err
check "existing output: nothing generated" bash -c '! grep -q denoise ow.err'
check "existing output: file unchanged" cmp -s out.png keep.png

# --- -n 2: numbered names, consecutive seeds, UTF-8 prompt in iTXt --------
"$diffuse" generate "un café, s'il vous plaît" --model "$model" --steps 2 -n 2 -o multi.png >multi.out 2>multi.err
check "-n 2: exit 0" [ $? -eq 0 ]
check "-n 2: multi-0.png and multi-1.png" [ -f multi-0.png -a -f multi-1.png -a ! -e multi.png ]
s0=$(meta multi-0.png diffuse:seed); s1=$(meta multi-1.png diffuse:seed)
check "-n 2: seeds $s0, $s1 are consecutive (random seed)" [ "$s1" = "$(python3 -c "print($s0 + 1)")" ]
check "-n 2: UTF-8 prompt kept" [ "$(meta multi-1.png diffuse:prompt)" = "un café, s'il vous plaît" ]
check "-n 2: UTF-8 prompt is an iTXt chunk" [ "$(python3 png.py chunk multi-1.png diffuse:prompt)" = iTXt ]

# --- --from: reproduces pixels (with --force over an existing file) -------
"$diffuse" generate --from multi-1.png --force -o out.png -q >from.out 2>from.err
check "--from --force: exit 0" [ $? -eq 0 ]
px_a=$(python3 png.py pixels out.png); px_b=$(python3 png.py pixels multi-1.png)
check "--from reproduces the pixels byte for byte" [ -n "$px_a" -a "$px_a" = "$px_b" ]
check "--from keeps seed and prompt" \
    [ "$(meta out.png diffuse:seed)" = "$s1" -a "$(meta out.png diffuse:prompt)" = "un café, s'il vous plaît" ]
check "-q: no progress output" [ ! -s from.err ]
"$diffuse" generate --from keep.png --seed 7 --steps 1 -o override.png -q >/dev/null 2>&1
check "--from: explicit --seed/--steps override the file" \
    [ "$(meta override.png diffuse:seed)" = 7 -a "$(meta override.png diffuse:steps)" = 1 \
      -a "$(meta override.png diffuse:prompt)" = "a photo of a cat" -a "$(meta override.png diffuse:sampler)" = euler ]

# --- tokenize and info ------------------------------------------------------
"$diffuse" tokenize "a photo of a cat" --model "$model" >tok.out 2>tok.err
check "tokenize: exit 0" [ $? -eq 0 ]
n_ids=$(head -n1 tok.out | wc -w)
check "tokenize: 'count: N' matches the ids printed ($n_ids)" [ "$(sed -n 2p tok.out)" = "count: $n_ids" ]
check "tokenize: start, 5 words, end = 7 ids" [ "$n_ids" -eq 7 ]
"$diffuse" info --model "$model" >info.out 2>info.err
check "info: exit 0" [ $? -eq 0 ]
check "info: family" grep -q "^family: SD 1.x$" info.out
check "info: parameter counts and weight bytes" \
    bash -c 'grep -Eq "^unet parameters: [1-9][0-9]*" info.out && grep -Eq "^weight bytes: [1-9][0-9]*" info.out'
check "info: native size" grep -q "^native size: 64x64" info.out
check "info: weights dtype" grep -Eq "^weights dtype: (float32|float16|bfloat16) " info.out
check "info: memory estimate" grep -Eq "^memory estimate \(1 image 64x64, guidance, CPU\): [0-9.]+ MiB peak" info.out

# --- errors and exit codes ------------------------------------------------
"$diffuse" generate "x" --model "$tmp/no-such-model" -o bad.png >bad.out 2>bad.err
rc=$?
check "bad model path: exit 1" [ "$rc" -eq 1 ]
check "bad model path: the library's message" \
    bash -c "grep -q 'no-such-model' bad.err && grep -q 'file or directory not found' bad.err"
check "bad model path: no file" [ ! -e bad.png ]
"$diffuse" generate "x" --steps many >/dev/null 2>usage.err
check "bad --steps: exit 2" [ $? -eq 2 ]
"$diffuse" generate "x" --frobnicate >/dev/null 2>&1
check "unknown option: exit 2" [ $? -eq 2 ]
"$diffuse" generate --model "$model" >/dev/null 2>&1
check "missing PROMPT: exit 2" [ $? -eq 2 ]
"$diffuse" frobnicate >/dev/null 2>&1
check "unknown command: exit 2" [ $? -eq 2 ]
for c in generate edit variation tokenize info; do
    "$diffuse" $c --help >help.out 2>&1
    check "$c --help" bash -c "[ $? -eq 0 ] && grep -q '^usage: diffuse $c' help.out"
done
"$diffuse" tokenize "x" >nomodel.out 2>nomodel.err
rc=$?
check "no --model: the demo model, or 'no model: pass --model' (exit 2)" \
    bash -c "[ $rc -eq 0 ] || { [ $rc -eq 2 ] && grep -q 'no model: pass --model' nomodel.err; }"

# --- Ctrl-C: exit 130, no file, no temporary file -------------------------
set -m # background jobs get their own process group and SIGINT not ignored
"$diffuse" generate "a long one" --model "$model" --steps 200 -o int.png >int.out 2>int.err &
pid=$!
for _ in $(seq 600); do grep -q "denoise" int.err && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -INT "$pid"
wait "$pid"
rc=$?
set +m
check "SIGINT: exit 130" [ "$rc" -eq 130 ]
check "SIGINT: no output file" [ ! -e int.png ]
check "SIGINT: no temporary file" bash -c '[ -z "$(ls -A | grep "^\.int")" ]'
check "SIGINT: says it cancelled" grep -q "cancelled; no file written" int.err

# --- terminal progress bar (when util-linux script(1) can fake a tty) ------
if command -v script >/dev/null 2>&1; then
    script -qec "'$diffuse' generate 'a cat' --model '$model' --steps 1 -o tty.png" tty.log >/dev/null 2>&1
    check "tty: bar redrawn in place with it/s and ETA" \
        bash -c "grep -q \$'\r\033\\[K' tty.log && grep -q 'it/s  ETA' tty.log && [ -f tty.png ]"
fi

# --- edit and variation (input PNG conversion: RGBA, gray mask) -----------
# diffuse_edit/diffuse_variation may still answer DIFFUSE_ERR_UNSUPPORTED
# while their pipelines are being finished; both outcomes are accepted here,
# and which one happened is printed.
python3 png.py write rgba.png 64 64 rgba
python3 png.py write mask.png 64 64 gray
image_call() { # NAME FILE-TO-CHECK SUBCOMMAND ARGS...
    local name="$1" file="$2" sub="$3"; shift 3
    "$diffuse" "$sub" "$@" --model "$model" --steps 2 -q >"$name.out" 2>"$name.err"
    local rc=$?
    if [ $rc -eq 0 ] && [ -f "$file" ] && [ "$(meta "$file" diffuse:mode)" = "$sub" ]; then
        pass "$name: worked"
    elif [ $rc -eq 1 ] && grep -q "not supported by this build or version" "$name.err" && [ ! -e "$file" ]; then
        pass "$name: DIFFUSE_ERR_UNSUPPORTED (pipeline not finished yet): $(cat "$name.err")"
    else
        fail "$name: exit $rc: $(cat "$name.err")"
    fi
}
image_call "edit (alpha of an RGBA PNG)" edit-alpha.png edit --image rgba.png "a red circle" -o edit-alpha.png
image_call "edit (gray mask PNG)" edit-mask.png edit --image out.png --mask mask.png "a red circle" -o edit-mask.png
image_call "variation -n 2" var-1.png variation --image out.png -n 2 --strength 0.5 -o var.png
if [ -f edit-mask.png ]; then # edit --from finds image, mask and settings in the file
    "$diffuse" edit --from edit-mask.png -q -o edit-again.png >/dev/null 2>edit-again.err
    px_a=$(python3 png.py pixels edit-again.png); px_b=$(python3 png.py pixels edit-mask.png)
    check "edit --from reproduces the edit byte for byte" [ -n "$px_a" -a "$px_a" = "$px_b" ]
fi
"$diffuse" edit --image out.png "no alpha, no mask" --model "$model" -q -o e.png >/dev/null 2>rgb.err
check "edit of an RGB image without --mask: exit 1 with the library's reason" \
    bash -c "[ $? -eq 1 ] && grep -q 'alpha' rgb.err"
"$diffuse" variation --image "$tmp/missing.png" --model "$model" -q -o v.png >/dev/null 2>miss.err
check "missing --image file: exit 1" bash -c "[ $? -eq 1 ] && grep -q 'missing.png' miss.err"

echo "test_cli: $failed failed"
[ "$failed" -eq 0 ]
