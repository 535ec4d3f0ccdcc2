/*
 * Stand-in libcuda.so.1 for machines without a GPU: the CUDA driver API calls that
 * nvgpu_cuda.vector_add makes, with "device memory" in host memory and the vectorAdd
 * kernel computed on the CPU. STANDIN_CUDA_FAIL=<call>:<code> makes that call fail with
 * that CUresult; STANDIN_CUDA_FAIL=wrong-sum makes the kernel write a wrong element;
 * STANDIN_CUDA_FAIL=hang makes cuInit never return, like a driver stuck on a hung GPU;
 * STANDIN_CUDA_FAIL=crash makes it abort the process. On an NVSwitch node whose fabric the
 * fabric manager has not trained (the simulated node's /sys/module/nvidia/fabric_state,
 * see tests/node/standins/nvstandin), cuInit fails with 802, as real CUDA does.
 * Several GPUs: STANDIN_CUDA_GPUS=UUID,UUID,... (default: one), narrowed by CUDA_VISIBLE_DEVICES
 * (UUIDs or indexes) as the real driver does; STANDIN_CUDA_BAD_GPU=UUID:CODE makes the first
 * allocation in a context on that GPU fail with CODE (214: an uncorrectable ECC error).
 * Built by tests/functional/test_host_check.py with `cc -shared -fPIC`.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>

typedef int CUresult;

#define MAX_GPUS 16
static char gpus[MAX_GPUS][64];
static int gpu_count = -1, current = -1;

/* The GPUs this process sees: STANDIN_CUDA_GPUS, then CUDA_VISIBLE_DEVICES's choice of them. */
static void enumerate(void)
{
    char all[MAX_GPUS][64];
    int n = 0;
    const char *list = getenv("STANDIN_CUDA_GPUS");
    if (gpu_count >= 0)
        return;
    if (!list || !*list)
        list = "GPU-5d1d0000-0000-4000-8000-000000000000";
    for (const char *p = list; *p && n < MAX_GPUS; n++) {
        size_t len = strcspn(p, ",");
        snprintf(all[n], sizeof all[n], "%.*s", (int)len, p);
        p += len + (p[len] == ',');
    }
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    gpu_count = 0;
    if (!visible) {
        memcpy(gpus, all, sizeof all);
        gpu_count = n;
        return;
    }
    for (const char *p = visible; *p && gpu_count < MAX_GPUS;) {
        size_t len = strcspn(p, ",");
        for (int i = 0; i < n; i++) {
            char index[8];
            snprintf(index, sizeof index, "%d", i);
            if ((strlen(all[i]) == len && !strncmp(all[i], p, len)) || (strlen(index) == len && !strncmp(index, p, len)))
                strcpy(gpus[gpu_count++], all[i]);
        }
        p += len + (p[len] == ',');
    }
}

static CUresult fail(const char *call)
{
    const char *spec = getenv("STANDIN_CUDA_FAIL");
    size_t n = strlen(call);
    if (spec && strncmp(spec, call, n) == 0 && spec[n] == ':')
        return atoi(spec + n + 1);
    return 0;
}

CUresult cuGetErrorName(CUresult code, const char **out)
{
    switch (code) {
    case 100: *out = "CUDA_ERROR_NO_DEVICE"; return 0;
    case 214: *out = "CUDA_ERROR_ECC_UNCORRECTABLE"; return 0;
    case 222: *out = "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"; return 0;
    case 719: *out = "CUDA_ERROR_LAUNCH_FAILED"; return 0;
    case 802: *out = "CUDA_ERROR_SYSTEM_NOT_READY"; return 0;
    case 999: *out = "CUDA_ERROR_UNKNOWN"; return 0;
    }
    return 1;
}

CUresult cuGetErrorString(CUresult code, const char **out)
{
    switch (code) {
    case 100: *out = "no CUDA-capable device is detected"; return 0;
    case 214: *out = "uncorrectable ECC error encountered"; return 0;
    case 222: *out = "the provided PTX was compiled with an unsupported toolchain."; return 0;
    case 719: *out = "unspecified launch failure"; return 0;
    /* cudaErrorSystemNotReady's text, as CUDA prints it (dstack#2348, FACTS.md "Real fleets") */
    case 802: *out = "system not yet initialized"; return 0;
    case 999: *out = "unknown error"; return 0;
    }
    return 1;
}

/* The GPUs' NVLink fabric: absent where there are no NVSwitches, else trained or not. */
static int fabric_ready(void)
{
    char state[32] = "";
    FILE *f = fopen("/sys/module/nvidia/fabric_state", "r");
    if (!f)
        return 1;
    if (!fgets(state, sizeof state, f))
        state[0] = 0;
    fclose(f);
    return strncmp(state, "Completed", 9) == 0;
}

CUresult cuDriverGetVersion(int *v) { *v = 13000; return 0; }
CUresult cuInit(unsigned flags)
{
    const char *spec = getenv("STANDIN_CUDA_FAIL");
    (void)flags;
    while (spec && !strcmp(spec, "hang"))
        pause();
    if (spec && !strcmp(spec, "crash"))
        abort();
    enumerate();
    if (!fail("cuInit") && gpu_count == 0)
        return 100;
    if (!fabric_ready())
        return 802;
    return fail("cuInit");
}
CUresult cuDeviceGet(int *dev, int ordinal)
{
    *dev = ordinal;
    return ordinal < 0 || ordinal >= gpu_count ? 101 : fail("cuDeviceGet");
}
CUresult cuDeviceGetUuid(unsigned char *uuid, int dev)
{
    /* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" -> its 16 bytes */
    const char *p = gpus[dev] + 4;
    for (int i = 0; i < 16; i++) {
        if (*p == '-')
            p++;
        unsigned int byte = 0;
        sscanf(p, "%2x", &byte);
        uuid[i] = (unsigned char)byte;
        p += 2;
    }
    return 0;
}
CUresult cuDeviceGetName(char *name, int len, int dev)
{
    (void)dev;
    strncpy(name, "Stand-in GPU", len);
    return 0;
}
CUresult cuCtxCreate_v2(void **ctx, unsigned flags, int dev)
{
    (void)flags;
    current = dev;
    *ctx = (void *)1;
    return fail("cuCtxCreate_v2");
}
CUresult cuCtxDestroy_v2(void *ctx) { (void)ctx; return 0; }
CUresult cuCtxSynchronize(void) { return fail("cuCtxSynchronize"); }

CUresult cuModuleLoadData(void **mod, const void *image)
{
    if (!strstr((const char *)image, ".entry vectorAdd("))
        return 218;
    *mod = (void *)2;
    return fail("cuModuleLoadData");
}
CUresult cuModuleGetFunction(void **fn, void *mod, const char *name)
{
    (void)mod;
    if (strcmp(name, "vectorAdd"))
        return 500;
    *fn = (void *)3;
    return 0;
}

CUresult cuMemAlloc_v2(uint64_t *ptr, size_t size)
{
    CUresult r = fail("cuMemAlloc_v2");
    const char *bad = getenv("STANDIN_CUDA_BAD_GPU");
    if (r)
        return r;
    if (bad && current >= 0 && !strncmp(bad, gpus[current], strlen(gpus[current])) && bad[strlen(gpus[current])] == ':')
        return atoi(bad + strlen(gpus[current]) + 1);
    *ptr = (uint64_t)(uintptr_t)malloc(size);
    return *ptr ? 0 : 2;
}
CUresult cuMemFree_v2(uint64_t ptr) { free((void *)(uintptr_t)ptr); return 0; }
CUresult cuMemcpyHtoD_v2(uint64_t dst, const void *src, size_t n)
{
    memcpy((void *)(uintptr_t)dst, src, n);
    return 0;
}
CUresult cuMemcpyDtoH_v2(void *dst, uint64_t src, size_t n)
{
    memcpy(dst, (void *)(uintptr_t)src, n);
    return 0;
}

CUresult cuLaunchKernel(void *fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shmem, void *stream, void **params, void **extra)
{
    (void)fn; (void)gy; (void)gz; (void)by; (void)bz; (void)shmem; (void)stream; (void)extra;
    CUresult r = fail("cuLaunchKernel");
    if (r)
        return r;
    const float *a = (const float *)(uintptr_t) * (uint64_t *)params[0];
    const float *b = (const float *)(uintptr_t) * (uint64_t *)params[1];
    float *c = (float *)(uintptr_t) * (uint64_t *)params[2];
    int n = *(int *)params[3];
    for (unsigned i = 0; i < gx * bx; i++)
        if ((int)i < n)
            c[i] = a[i] + b[i];
    const char *spec = getenv("STANDIN_CUDA_FAIL");
    if (spec && !strcmp(spec, "wrong-sum"))
        c[n / 2] += 1.0f;
    return 0;
}
