// Test helper for tests/test_nms.py: reads doubles (native binary) from stdin and
// writes, for each, threshold_in<float> then threshold_in<double> (nms_threshold.h,
// the conversion the CPU and CUDA kernels use) to stdout, so that the test can
// check them against every comparison it likes.
#include <cstdio>

#include "nms/nms_threshold.h"

int main() {
  double threshold;
  while (std::fread(&threshold, sizeof threshold, 1, stdin) == 1) {
    const float t32 = fastmask::threshold_in<float>(threshold);
    const double t64 = fastmask::threshold_in<double>(threshold);
    if (std::fwrite(&t32, sizeof t32, 1, stdout) != 1 || std::fwrite(&t64, sizeof t64, 1, stdout) != 1) return 1;
  }
  return 0;
}
