// tsan-canary.c: shows that ThreadSanitizer with OpenMP's Archer tool sees
// OpenMP's synchronisation and still reports a real race, so that a clean
// TSan run of the kernel's tests means something (see .ci/sanitizers).
//
//   ./canary        each thread writes its own element: no race, no report
//                   (without Archer, TSan reports libomp's fork/join as races)
//   ./canary racy   both threads add to element 0: a data race, one report
#include <stdio.h>
#include <stdlib.h>

int omp_get_thread_num(void);  // the Swift toolchain's clang ships no omp.h

int main(int argc, char **argv) {
    const int racy = argc > 1;
    float *out = calloc(4, sizeof(float));
    if (!out) return 1;
#pragma omp parallel num_threads(2)
    {
        const int thread = omp_get_thread_num();
        out[racy ? 0 : thread] += (float)thread + 1.0f;
    }
    out[2] = out[0] + out[1];  // after the region's join
    printf("%g\n", (double)out[2]);
    free(out);
    return 0;
}
