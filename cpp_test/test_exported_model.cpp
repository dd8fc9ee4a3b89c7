// C++ test of a `fastmask export` package, built and run by CMakeLists.txt (ctest); non-zero on
// failure. A libtorch program with libfastmask_ops linked (its TORCH_LIBRARY registrations are the
// only fastmask code: no Python, no model code) loads the .pt2 that make_exported_model.py wrote,
// runs it on that script's inputs and compares with the eager model's outputs within the
// tolerances the README documents for exported packages (Inductor reorders float32 arithmetic):
// boxes 1e-3 px, scores 1e-5, masks 1e-3; labels and valid rows equal.
//
//   fastmask_test_exported_model DIR   (DIR: model.pt2, inputs.pt, expected.pt)
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what.c_str());
    ++failures;
  }
}

std::vector<torch::Tensor> load_tensors(const std::string& path) {  // torch.save([tensor, ...])
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<torch::Tensor> tensors;
  for (const auto& value : torch::pickle_load(bytes).toList()) tensors.push_back(value.get().toTensor());
  return tensors;
}

void expect_close(const std::string& name, const torch::Tensor& got, const torch::Tensor& want, double atol) {
  if (got.sizes() != want.sizes() || got.dtype() != want.dtype()) {
    check(false, name + ": shape or dtype differs from the eager model's");
    return;
  }
  const double diff = (got - want).abs().max().item<double>();
  std::printf("%-6s %-20s max |package - eager| = %.3g (tolerance %.0e)\n", name.c_str(),
              c10::str(got.sizes()).c_str(), diff, atol);
  check(diff <= atol, name + " differs from the eager model's by more than the tolerance");
}

void expect_equal(const std::string& name, const torch::Tensor& got, const torch::Tensor& want) {
  const bool equal = got.sizes() == want.sizes() && got.dtype() == want.dtype() && torch::equal(got, want);
  std::printf("%-6s %-20s %s\n", name.c_str(), c10::str(got.sizes()).c_str(), equal ? "equal" : "DIFFERENT");
  check(equal, name + " differs from the eager model's");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR (with model.pt2, inputs.pt, expected.pt)\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  torch::inductor::AOTIModelPackageLoader loader(dir + "/model.pt2");
  const auto metadata = loader.get_metadata();
  const auto outputs_entry = metadata.find("outputs");
  check(outputs_entry != metadata.end() && outputs_entry->second == "boxes,scores,labels,masks,valid",
        "the package's outputs metadata is not boxes,scores,labels,masks,valid");
  const auto images_entry = metadata.find("images");
  check(images_entry != metadata.end() && images_entry->second == "uint8[2, 3, 128, 128]",
        "the package's images metadata is not uint8[2, 3, 128, 128]");

  const std::vector<torch::Tensor> inputs = load_tensors(dir + "/inputs.pt");
  const std::vector<torch::Tensor> expected = load_tensors(dir + "/expected.pt");
  torch::NoGradGuard no_grad;
  const std::vector<torch::Tensor> got = loader.run(inputs);
  if (got.size() != expected.size() || got.size() != 5) {
    std::fprintf(stderr, "FAILED: the package returned %zu tensors, expected %zu\n", got.size(), expected.size());
    return 1;
  }
  expect_close("boxes", got[0], expected[0], 1e-3);
  expect_close("scores", got[1], expected[1], 1e-5);
  expect_equal("labels", got[2], expected[2]);
  expect_close("masks", got[3], expected[3], 1e-3);
  expect_equal("valid", got[4], expected[4]);
  // The second image is 96 rows tall: its boxes are clipped to it.
  check(got[0][1].select(1, 3).max().item<float>() <= 96.0f, "image 1's boxes go below its 96 rows");

  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("the exported package run from C++ matches the eager model\n");
  return 0;
}
