// qcompile_run: run a model library compiled by qcompile on a board, with no Python.
//
//   qcompile_run [--threads N] [--repeat R] model.so IN.npy OUT.npy [IN.npy OUT.npy ...]
//
// Each IN.npy is one inference's input (several inputs: a.npy,b.npy); its output goes to
// OUT.npy (a model with several outputs writes OUT.0.npy, OUT.1.npy, ...).  Inputs and outputs
// are NumPy .npy files (little-endian, C order).  --repeat R runs the first input R more times
// and prints the median latency.  Needs libtvm_runtime.so and libtvm_ffi.so beside it (the
// bundle's lib/), found through the rpath or LD_LIBRARY_PATH.
//
// Built against the tvm-ffi headers only (the runtime's own headers are not shipped).

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

// TVM's kernels take their arguments 64-byte aligned (aligned AVX-512 loads: malloc's 16-byte
// alignment crashed a small model's first kernel on x86)
constexpr size_t kAlignment = 64;

struct CPUAlloc {
  void AllocData(DLTensor* t) {
    size_t bytes = std::max<size_t>(ffi::GetDataSize(*t), 1);
    t->data = std::aligned_alloc(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
    if (t->data == nullptr) throw std::runtime_error("out of memory");
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

struct NpyType {
  const char* descr;
  DLDataType dtype;
};

const NpyType kTypes[] = {
    {"<f4", {kDLFloat, 32, 1}}, {"<f8", {kDLFloat, 64, 1}}, {"<i4", {kDLInt, 32, 1}},
    {"<i8", {kDLInt, 64, 1}},   {"|u1", {kDLUInt, 8, 1}},   {"|i1", {kDLInt, 8, 1}},
    {"<i2", {kDLInt, 16, 1}},   {"<u2", {kDLUInt, 16, 1}},  {"|b1", {kDLBool, 8, 1}},
};

std::string Field(const std::string& header, const std::string& key) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) throw std::runtime_error("npy header has no '" + key + "'");
  at = header.find(':', at);
  return header.substr(at + 1);
}

ffi::Tensor ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  char magic[8];
  in.read(magic, 8);
  if (!in || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + ": not an .npy file");
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    in.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    in.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (uint32_t(b[3]) << 24);
  }
  std::string header(header_len, '\0');
  in.read(&header[0], header_len);
  std::string descr = Field(header, "descr");
  descr = descr.substr(descr.find('\'') + 1);
  descr = descr.substr(0, descr.find('\''));
  const NpyType* type = nullptr;
  for (const NpyType& t : kTypes)
    if (descr == t.descr) type = &t;
  if (type == nullptr) throw std::runtime_error(path + ": unsupported dtype " + descr);
  if (Field(header, "fortran_order").find("True") < Field(header, "fortran_order").find(','))
    throw std::runtime_error(path + ": Fortran order is not supported, save C order");
  std::string shape_text = Field(header, "shape");
  shape_text = shape_text.substr(shape_text.find('(') + 1);
  shape_text = shape_text.substr(0, shape_text.find(')'));
  std::vector<int64_t> shape;
  std::stringstream ss(shape_text);
  std::string item;
  while (std::getline(ss, item, ','))
    if (item.find_first_of("0123456789") != std::string::npos) shape.push_back(std::stoll(item));
  ffi::Tensor t = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::Shape(shape), type->dtype, DLDevice{kDLCPU, 0});
  size_t bytes = ffi::GetDataSize(t);
  in.read(static_cast<char*>(t.data_ptr()), bytes);
  if (static_cast<size_t>(in.gcount()) != bytes) throw std::runtime_error(path + ": truncated data");
  return t;
}

void WriteNpy(const std::string& path, const ffi::Tensor& t) {
  const NpyType* type = nullptr;
  for (const NpyType& k : kTypes)
    if (k.dtype.code == t.dtype().code && k.dtype.bits == t.dtype().bits) type = &k;
  if (type == nullptr) throw std::runtime_error("output dtype not writable as .npy");
  // the header numpy.save writes, byte for byte (so outputs compare with `cmp`)
  std::string shape = "(";
  ffi::ShapeView dims = t.shape();
  size_t ndim = dims.size();
  for (size_t i = 0; i < ndim; ++i) shape += (i ? ", " : "") + std::to_string(dims[i]);
  shape += ndim == 1 ? ",)" : ")";
  std::string header = std::string("{'descr': '") + type->descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  if (!out) throw std::runtime_error("cannot write " + path);
  out.write("\x93NUMPY\x01\x00", 8);
  unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff), static_cast<unsigned char>(header.size() >> 8)};
  out.write(reinterpret_cast<char*>(len), 2);
  out << header;
  out.write(static_cast<const char*>(t.data_ptr()), ffi::GetDataSize(t));
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) parts.push_back(item);
  return parts;
}

std::string Indexed(const std::string& path, size_t i) {
  size_t dot = path.rfind(".npy");
  std::string stem = dot == std::string::npos ? path : path.substr(0, dot);
  return stem + "." + std::to_string(i) + ".npy";
}

int Usage() {
  std::cerr << "usage: qcompile_run [--threads N] [--repeat R] model.so IN.npy OUT.npy [IN.npy OUT.npy ...]\n"
               "  --threads: worker threads (default: the cores this process may run on)\n"
               "  IN.npy: one inference's input (a.npy,b.npy for several); OUT.npy: its output\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args;
  int repeat = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "--threads" || a == "--repeat") && i + 1 < argc) {
      if (a == "--threads") setenv("TVM_NUM_THREADS", argv[++i], 1);  // read when the pool starts
      else repeat = std::atoi(argv[++i]);
    } else if (a == "-h" || a == "--help") {
      return Usage();
    } else {
      args.push_back(a);
    }
  }
  if (args.size() < 3 || args.size() % 2 == 0) return Usage();
  // Without TVM_NUM_THREADS, TVM's pool starts one worker per two logical cores on x86: ask for
  // every core this process may run on instead (what `import qcompile` does in Python).
  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0)
    setenv("TVM_NUM_THREADS", std::to_string(CPU_COUNT(&cpus)).c_str(), 0);
  try {
    // dlopen searches the library path for a bare file name: make it a path
    std::string model = args[0].find('/') == std::string::npos ? "./" + args[0] : args[0];
    ffi::Module lib = ffi::Module::LoadFromFile(model);
    ffi::Optional<ffi::Function> load = lib->GetFunction("vm_load_executable");
    if (!load.has_value()) throw std::runtime_error(args[0] + " is not a qcompile (Relax VM) library");
    ffi::Module vm = (*load)().cast<ffi::Module>();
    const int kPooled = 2;  // the allocator Python's VirtualMachine uses by default
    vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, kPooled);
    ffi::Function main_fn = vm->GetFunction("main").value();
    for (size_t p = 1; p + 1 < args.size(); p += 2) {
      std::vector<ffi::Tensor> inputs;
      for (const std::string& path : Split(args[p], ',')) inputs.push_back(ReadNpy(path));
      std::vector<ffi::AnyView> views(inputs.begin(), inputs.end());
      ffi::Any result;
      main_fn.CallPacked(views.data(), static_cast<int32_t>(views.size()), &result);
      if (auto tensor = result.try_cast<ffi::Tensor>()) {
        WriteNpy(args[p + 1], *tensor);
      } else {
        ffi::Array<ffi::Any> outs = result.cast<ffi::Array<ffi::Any>>();
        for (size_t i = 0; i < outs.size(); ++i) WriteNpy(Indexed(args[p + 1], i), outs[i].cast<ffi::Tensor>());
      }
      if (p == 1 && repeat > 0) {
        std::vector<double> ms;
        for (int r = 0; r < repeat; ++r) {
          auto t0 = std::chrono::steady_clock::now();
          main_fn.CallPacked(views.data(), static_cast<int32_t>(views.size()), &result);
          ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        }
        std::sort(ms.begin(), ms.end());
        int threads = ffi::Function::GetGlobalRequired("runtime.NumThreads")().cast<int>();
        std::printf("median %.3f ms over %d runs, %d threads (min %.3f, max %.3f)\n",
                    ms[ms.size() / 2], repeat, threads, ms.front(), ms.back());
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "qcompile_run: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
