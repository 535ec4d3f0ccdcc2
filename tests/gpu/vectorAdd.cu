/*
 * The vector add of NVIDIA's cuda-samples (Samples/0_Introduction/vectorAdd), with its
 * messages, for the validation image built by prepare_podman.sh: it prints "Test PASSED"
 * only when the GPU really ran the kernel, and the CUDA runtime's own error text otherwise
 * (e.g. "CUDA driver version is insufficient for CUDA runtime version" when no libcuda was
 * put into the container).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime.h>

__global__ void vectorAdd(const float *A, const float *B, float *C, int numElements)
{
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < numElements)
        C[i] = A[i] + B[i] + 0.0f;
}

static void check(cudaError_t err, const char *what)
{
    if (err != cudaSuccess) {
        fprintf(stderr, "Failed to %s (error code %s)!\n", what, cudaGetErrorString(err));
        exit(EXIT_FAILURE);
    }
}

int main(void)
{
    int numElements = 50000;
    size_t size = numElements * sizeof(float);
    printf("[Vector addition of %d elements]\n", numElements);

    float *h_A = (float *)malloc(size), *h_B = (float *)malloc(size), *h_C = (float *)malloc(size);
    if (!h_A || !h_B || !h_C) {
        fprintf(stderr, "Failed to allocate host vectors!\n");
        exit(EXIT_FAILURE);
    }
    for (int i = 0; i < numElements; ++i) {
        h_A[i] = rand() / (float)RAND_MAX;
        h_B[i] = rand() / (float)RAND_MAX;
    }

    float *d_A = NULL, *d_B = NULL, *d_C = NULL;
    check(cudaMalloc((void **)&d_A, size), "allocate device vector A");
    check(cudaMalloc((void **)&d_B, size), "allocate device vector B");
    check(cudaMalloc((void **)&d_C, size), "allocate device vector C");

    printf("Copy input data from the host memory to the CUDA device\n");
    check(cudaMemcpy(d_A, h_A, size, cudaMemcpyHostToDevice), "copy vector A from host to device");
    check(cudaMemcpy(d_B, h_B, size, cudaMemcpyHostToDevice), "copy vector B from host to device");

    int threadsPerBlock = 256;
    int blocksPerGrid = (numElements + threadsPerBlock - 1) / threadsPerBlock;
    printf("CUDA kernel launch with %d blocks of %d threads\n", blocksPerGrid, threadsPerBlock);
    vectorAdd<<<blocksPerGrid, threadsPerBlock>>>(d_A, d_B, d_C, numElements);
    check(cudaGetLastError(), "launch vectorAdd kernel");

    printf("Copy output data from the CUDA device to the host memory\n");
    check(cudaMemcpy(h_C, d_C, size, cudaMemcpyDeviceToHost), "copy vector C from device to host");

    for (int i = 0; i < numElements; ++i) {
        if (fabs(h_A[i] + h_B[i] - h_C[i]) > 1e-5) {
            fprintf(stderr, "Result verification failed at element %d!\n", i);
            exit(EXIT_FAILURE);
        }
    }
    printf("Test PASSED\n");

    check(cudaFree(d_A), "free device vector A");
    check(cudaFree(d_B), "free device vector B");
    check(cudaFree(d_C), "free device vector C");
    free(h_A);
    free(h_B);
    free(h_C);
    printf("Done\n");
    return 0;
}
