#!/usr/bin/env bash
# Packs the OnnxSteer library and builds fresh console apps against the package from a local feed, as an app developer
# would (outside this repository, so none of its MSBuild files apply):
#   1. net10.0 + Microsoft.ML.OnnxRuntime (CPU): patch the bundled model, extract a vector on the loaded model, generate
#      with and without steering, stream through the IChatClient, and check the Cuda error names the Gpu package;
#   2. net8.0 + Microsoft.ML.OnnxRuntime, published self-contained for linux-x64 (runs where no .NET 8 runtime is
#      installed): the same run on the library's net8.0 build;
#   3. net10.0 + Microsoft.ML.OnnxRuntime.Gpu: restores and builds, the output carries the CUDA provider library, and at
#      run time the loaded native library is the Gpu package's (it lists CUDAExecutionProvider);
#   4. the CLI as a dotnet tool: packs OnnxSteer.Cli, installs it into a temporary --tool-path and runs `onnxsteer demo`
#      from a temporary folder outside the checkout, which must exit 0 on the model, data and selection the package
#      carries (not a checkout's).
# Several minutes (restores, four builds); not part of `dotnet test`.
# Usage: tools/package-check.sh [--tool-only] [work-dir]   (--tool-only: step 4 alone, about 2 minutes)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
tool_only=false
if [ "${1:-}" = "--tool-only" ]; then tool_only=true; shift; fi
work="${1:-$(mktemp -d /tmp/onnxsteer-package-check.XXXXXX)}"
mkdir -p "$work"
ort=1.32.0
# A fresh version per run: NuGet's global cache would otherwise serve an earlier pack of the same version.
suffix="check.$(date +%Y%m%d%H%M%S)"

tool_check() {
    echo "== dotnet tool: pack OnnxSteer.Cli, install into $work/tool, run 'onnxsteer demo' outside the checkout"
    dotnet pack "$repo/src/OnnxSteer.Cli" -c Release -o "$work/tool-feed" --version-suffix "$suffix" -v quiet -nologo
    local pkg
    pkg=$(ls "$work/tool-feed"/OnnxSteer.Cli.*.nupkg | grep -v snupkg | head -1)
    tool_version=$(basename "$pkg" .nupkg); tool_version=${tool_version#OnnxSteer.Cli.}
    echo "tool package: $(basename "$pkg"), $(( $(stat -c %s "$pkg") / 1000000 )) MB"
    # The demo's model, data and selection travel in the package (OnnxSteer.Cli.csproj, demo/).
    # (The listing is kept first: grep -q closing the pipe early would fail unzip, and the pipeline, under pipefail.)
    local listing; listing=$(unzip -l "$pkg")
    for f in demo/models/tiny-instruct/genai_config.json demo/models/data/eval/test.jsonl demo/docs/evaluation/selection.json; do
        grep -q "tools/net10.0/any/$f" <<<"$listing" || { echo "the tool package lacks $f"; exit 1; }
    done
    rm -rf "$work/tool"
    # From $work, so the repository's nuget.config does not apply: the tool comes from the local feed only.
    (cd "$work" && dotnet tool install OnnxSteer.Cli --tool-path "$work/tool" --add-source "$work/tool-feed" --version "$tool_version")
    local run; run=$(mktemp -d /tmp/onnxsteer-tool-run.XXXXXX)
    case "$run/" in "$repo"/*) echo "the run folder $run is inside the checkout"; exit 1 ;; esac
    # The demo names the model folder it runs on: it must be the installed package's copy, not a checkout's.
    (cd "$run" && "$work/tool/onnxsteer" demo) | tee "$work/tool-demo.txt"
    grep -q "^onnxsteer demo: $work/tool/.store/.*/demo/models/tiny-instruct$" "$work/tool-demo.txt" \
        || { echo "the installed demo did not run on the model its package carries"; exit 1; }
    rm -rf "$run"
    echo "tool demo: exit 0 from $run on the packed model"
}

if $tool_only; then tool_check; echo "package-check: tool passed ($tool_version)"; exit 0; fi

echo "== pack ($work/feed)"
dotnet pack "$repo/src/OnnxSteer" -c Release -o "$work/feed" --version-suffix "$suffix" -v quiet -nologo
pkg=$(ls "$work/feed"/OnnxSteer.*.nupkg | grep -v snupkg | head -1)
version=$(basename "$pkg" .nupkg); version=${version#OnnxSteer.}
ls -l "$work/feed"
# What a package user gets: both target frameworks, the readme, the license expression, the managed ORT dependency only.
unzip -l "$pkg" | grep -E "lib/net8.0/OnnxSteer.dll|lib/net10.0/OnnxSteer.dll|README.md" >/dev/null || { echo "package lacks a target framework or the readme"; exit 1; }
nuspec=$(unzip -p "$pkg" OnnxSteer.nuspec)
grep -q '<license type="expression">MIT</license>' <<<"$nuspec" || { echo "no license in the nuspec"; exit 1; }
grep -q 'Microsoft.ML.OnnxRuntime.Managed' <<<"$nuspec" || { echo "no Microsoft.ML.OnnxRuntime.Managed dependency"; exit 1; }
if grep -qE 'id="Microsoft.ML.OnnxRuntime"' <<<"$nuspec"; then echo "the package depends on a native ONNX Runtime package"; exit 1; fi
[ -f "$work/feed/OnnxSteer.$version.snupkg" ] || { echo "no symbol package"; exit 1; }

make_app() { # name tfm native-package
    local dir="$work/$1"
    rm -rf "$dir"; mkdir -p "$dir"
    cat > "$dir/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="local" value="$work/feed" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
  </packageSources>
</configuration>
XML
    cat > "$dir/$1.csproj" <<XML
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <OutputType>Exe</OutputType>
    <TargetFramework>$2</TargetFramework>
    <ImplicitUsings>enable</ImplicitUsings>
    <Nullable>enable</Nullable>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="OnnxSteer" Version="$version" />
    <PackageReference Include="$3" Version="$ort" />
  </ItemGroup>
</Project>
XML
    cp "$repo/tools/package-check/Program.cs" "$dir/Program.cs"
}

echo "== net10.0 app, Microsoft.ML.OnnxRuntime (CPU)"
make_app app-cpu net10.0 Microsoft.ML.OnnxRuntime
dotnet build "$work/app-cpu" -c Release -v quiet -nologo
du -sh "$work/app-cpu/bin/Release/net10.0" | sed 's/^/framework-dependent output (every platform'"'"'s natives): /'
dotnet "$work/app-cpu/bin/Release/net10.0/app-cpu.dll" "$repo" "$work/run-cpu" cpu
dotnet publish "$work/app-cpu" -c Release -r linux-x64 --self-contained false -o "$work/app-cpu/out-linux-x64" -v quiet -nologo
du -sh "$work/app-cpu/out-linux-x64" | sed 's/^/framework-dependent publish for linux-x64 (one platform'"'"'s natives): /'

echo "== net8.0 app, Microsoft.ML.OnnxRuntime (CPU), self-contained linux-x64"
make_app app-net8 net8.0 Microsoft.ML.OnnxRuntime
dotnet publish "$work/app-net8" -c Release -r linux-x64 --self-contained -o "$work/app-net8/out" -v quiet -nologo
du -sh "$work/app-net8/out" | sed 's/^/self-contained linux-x64 output (one platform'"'"'s natives, with the runtime): /'
"$work/app-net8/out/app-net8" "$repo" "$work/run-net8" cpu

echo "== net10.0 app, Microsoft.ML.OnnxRuntime.Gpu"
make_app app-gpu net10.0 Microsoft.ML.OnnxRuntime.Gpu
dotnet build "$work/app-gpu" -c Release -v quiet -nologo
find "$work/app-gpu/bin/Release/net10.0" -name 'libonnxruntime_providers_cuda.so' | grep -q . || { echo "no CUDA provider library in the Gpu app's output"; exit 1; }
dotnet "$work/app-gpu/bin/Release/net10.0/app-gpu.dll" "$repo" "$work/run-gpu" gpu

tool_check

echo "package-check: all passed ($version)"
