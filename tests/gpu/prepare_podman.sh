#!/usr/bin/env bash
# Make a GPU machine able to run the container half of the GPU suite (tests/gpu), as root:
#  1. Podman: used as it is where `podman` works already (a real RHEL node); otherwise
#     installed from carried Debian packages (FACTS.md, "The GPU machine, measured"):
#     dpkg -x into $NVGPU_PODMAN_PREFIX, wrappers that set LD_LIBRARY_PATH (Podman does not
#     pass its environment to conmon), setuid newuidmap/newgidmap for rootless users, and
#     /etc/containers/{containers,storage}.conf for runc, cgroupfs, the file events logger,
#     the rlimits that machine allows and no network.
#  2. A CDI spec for this machine's GPUs at /etc/cdi/nvidia.yaml, standing in for
#     `nvidia-ctk cdi generate` (not installable there): device nodes, libcuda and the
#     driver's JIT compiler bind-mounted at the paths the image's loader searches.
#  3. The validation image, built offline: a rootfs of Debian's libc6, libgcc-s1 and
#     libstdc++6 plus vectorAdd (tests/gpu/vectorAdd.cu) built here with nvcc, `podman import`ed
#     for root and for the rootless user.
#  4. A real rootless user with subuid/subgid ranges and a /run/user/UID.
# Idempotent. Environment (defaults): NVGPU_DEBS (<repo>/.debs), NVGPU_PODMAN_PREFIX
# (/opt/nvgpu-podman), NVGPU_ROOTLESS_USER (nvgpu-rootless), NVGPU_ROOTLESS_UID (2001),
# NVGPU_IMAGE (localhost/nvgpu/cuda-vector-add:v0.1), NVCC (nvcc on PATH or /usr/local/cuda).
set -euo pipefail
shopt -s nullglob

repo=$(cd "$(dirname "$0")/../.." && pwd)
debs=${NVGPU_DEBS:-$repo/.debs}
prefix=${NVGPU_PODMAN_PREFIX:-/opt/nvgpu-podman}
user=${NVGPU_ROOTLESS_USER:-nvgpu-rootless}
uid=${NVGPU_ROOTLESS_UID:-2001}
image=${NVGPU_IMAGE:-localhost/nvgpu/cuda-vector-add:v0.1}
work=${NVGPU_WORK:-/var/tmp/nvgpu-gpu-suite}
arch_libs=usr/lib/x86_64-linux-gnu
image_debs="libc6_ libgcc-s1_ libstdc++6_"

log() { echo "prepare_podman: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "run as root"; exit 1; }
mkdir -p "$work"

is_image_deb() {
    local base
    base=$(basename "$1")
    for p in $image_debs; do [[ $base == "$p"* ]] && return 0; done
    return 1
}

wrapper() { # wrapper PATH TARGET: run TARGET with the prefix's libraries first
    cat >"$1" <<EOF
#!/bin/sh
LD_LIBRARY_PATH=$prefix/$arch_libs:$prefix/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH
exec $2 "\$@"
EOF
    chmod 755 "$1"
}

# --- 1. Podman -------------------------------------------------------------------------
if podman --version >/dev/null 2>&1 && [ ! -e "$prefix/.installed" ]; then
    log "using the installed $(podman --version)"
else
    if [ ! -e "$prefix/.installed" ]; then
        ls "$debs"/podman_*.deb >/dev/null 2>&1 || { log "no podman and no $debs/podman_*.deb"; exit 3; }
        mkdir -p "$prefix/bin"
        for deb in "$debs"/*.deb; do
            is_image_deb "$deb" || dpkg -x "$deb" "$prefix"
        done
        wrapper "$prefix/bin/conmon" "$prefix/usr/bin/conmon"
        wrapper "$prefix/bin/runc" "$prefix/usr/sbin/runc"
        wrapper /usr/local/bin/podman "$prefix/usr/bin/podman"
        touch "$prefix/.installed"
    fi
    hash -r
    # Rootless Podman runs the setuid newuidmap/newgidmap found on the user's PATH; the
    # loader ignores LD_LIBRARY_PATH for setuid programs, so their libsubid goes to a
    # system library directory.
    if ! command -v newuidmap >/dev/null 2>&1; then
        install -m 4755 "$prefix/usr/bin/newuidmap" "$prefix/usr/bin/newgidmap" /usr/local/bin/
        cp -a "$prefix/$arch_libs"/libsubid.so.4* /usr/local/lib/
        ldconfig
    fi
    mkdir -p /etc/containers
    [ -e /etc/containers/policy.json ] || cp "$prefix/etc/containers/policy.json" /etc/containers/
    [ -e /etc/containers/registries.conf ] || cp "$prefix/etc/containers/registries.conf" /etc/containers/
    cat >/etc/containers/containers.conf <<EOF
# Written by tests/gpu/prepare_podman.sh for Podman from $prefix.
[containers]
netns = "none"
default_ulimits = ["nofile=1024:1024", "nproc=512:512"]
seccomp_profile = "$prefix/usr/share/containers/seccomp.json"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
conmon_path = ["$prefix/bin/conmon"]
helper_binaries_dir = ["$prefix/usr/lib/podman", "$prefix/usr/libexec/podman"]

[engine.runtimes]
runc = ["$prefix/bin/runc"]
EOF
    cat >/etc/containers/storage.conf <<EOF
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
EOF
    log "installed $(podman --version) from $debs into $prefix"
fi

# --- 2. CDI spec -----------------------------------------------------------------------
driver=$(cat /sys/module/nvidia/version)
libcuda=$(python3 - <<'EOF'
import ctypes
ctypes.CDLL("libcuda.so.1")
with open("/proc/self/maps") as fh:
    print(next(line.split()[-1] for line in fh if "/libcuda.so" in line))
EOF
)
libdir=$(dirname "$libcuda")
{
    echo "# For this machine's driver $driver; written by tests/gpu/prepare_podman.sh in place of"
    echo "# nvidia-ctk cdi generate."
    echo 'cdiVersion: "0.5.0"'
    echo "kind: nvidia.com/gpu"
    echo "devices:"
    # Each GPU by index and by UUID, as nvidia-ctk cdi generate names them
    # (--device-name-strategy index and uuid).
    for node in /dev/nvidia[0-9]*; do
        index=${node#/dev/nvidia}
        uuid=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i "$index")
        for name in "$index" "$uuid"; do
            echo "  - name: \"$name\""
            echo "    containerEdits:"
            echo "      deviceNodes:"
            echo "        - path: $node"
        done
    done
    echo "  - name: all"
    echo "    containerEdits:"
    echo "      deviceNodes:"
    for node in /dev/nvidia[0-9]*; do echo "        - path: $node"; done
    echo "containerEdits:"
    echo "  deviceNodes:"
    for node in /dev/nvidiactl /dev/nvidia-uvm /dev/nvidia-uvm-tools; do
        [ -e "$node" ] && echo "    - path: $node"
    done
    echo "  mounts:"
    for lib in libcuda libnvidia-ptxjitcompiler libnvidia-gpucomp libnvidia-nvvm libnvidia-ml; do
        host=$libdir/$lib.so.$driver
        [ -e "$host" ] || continue
        soname=$lib.so.1
        [ "$lib" = libnvidia-nvvm ] && soname=$lib.so.4
        for target in "/$arch_libs/$lib.so.$driver" "/$arch_libs/$soname"; do
            echo "    - hostPath: $host"
            echo "      containerPath: $target"
            echo "      options: [ro, nosuid, nodev, bind]"
        done
    done
} >"$work/nvidia.yaml"
mkdir -p /etc/cdi
install -m 644 "$work/nvidia.yaml" /etc/cdi/nvidia.yaml
log "wrote /etc/cdi/nvidia.yaml for driver $driver ($libcuda)"

# --- 3. The validation image -----------------------------------------------------------
nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ ! -e "$work/rootfs.tar" ]; then
    rm -rf "$work/rootfs"
    mkdir -p "$work/rootfs/usr/local/bin"
    for deb in "$debs"/*.deb; do
        is_image_deb "$deb" && dpkg -x "$deb" "$work/rootfs"
    done
    "$nvcc" -O2 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_75,code=compute_75 \
        -o "$work/rootfs/usr/local/bin/vectorAdd" "$repo/tests/gpu/vectorAdd.cu"
    tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
fi
import_as() { # import_as USER|root
    local cmd="podman import --change 'CMD [\"/usr/local/bin/vectorAdd\"]' $work/rootfs.tar $image"
    if [ "$1" = root ]; then
        podman image exists "$image" || eval "$cmd" >/dev/null
    else
        su -s /bin/sh "$1" -c "cd; export XDG_RUNTIME_DIR=/run/user/$uid; podman image exists $image || $cmd >/dev/null"
    fi
}
import_as root

# --- 4. The rootless user --------------------------------------------------------------
id "$user" >/dev/null 2>&1 || useradd -m -u "$uid" -s /bin/bash "$user"
uid=$(id -u "$user")
for f in /etc/subuid /etc/subgid; do
    grep -q "^$user:" "$f" 2>/dev/null || echo "$user:200000:65536" >>"$f"
done
install -d -m 700 -o "$user" -g "$(id -g "$user")" "/run/user/$uid"
chmod 755 "$work" && chmod 644 "$work/rootfs.tar"
import_as "$user"

echo "image=$image"
echo "user=$user"
echo "cdi_spec=/etc/cdi/nvidia.yaml"
