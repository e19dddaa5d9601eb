//===- HostTensor.cpp - host tensors and .npy files -----------------------===//
//
// Element access for HostTensor and a reader/writer for NumPy's .npy format.
//
//===----------------------------------------------------------------------===//

#include "ds/support/HostTensor.h"
#include "ds/support/SafeTensors.h"

#include "absl/strings/str_cat.h"

#include <fstream>
#include <sstream>

namespace ds {

std::vector<float> HostTensor::toFloats() const {
  TensorView view{"", dtype, shape, bytes.data(), bytes.size(), ""};
  std::vector<float> out(static_cast<size_t>(numElements()));
  for (int64_t i = 0; i < numElements(); ++i)
    out[i] = view.floatAt(i);
  return out;
}

std::vector<int64_t> HostTensor::toInts() const {
  TensorView view{"", dtype, shape, bytes.data(), bytes.size(), ""};
  std::vector<int64_t> out(static_cast<size_t>(numElements()));
  for (int64_t i = 0; i < numElements(); ++i)
    out[i] = view.intAt(i);
  return out;
}

std::string HostTensor::shapeString() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    absl::StrAppend(&s, i ? ", " : "", shape[i]);
  return s + "]";
}

static std::string npyDescr(DType dtype) {
  switch (dtype) {
  case DType::F64:
    return "<f8";
  case DType::F16:
    return "<f2";
  case DType::I64:
    return "<i8";
  case DType::I32:
    return "<i4";
  case DType::I16:
    return "<i2";
  case DType::I8:
    return "|i1";
  case DType::U8:
    return "|u1";
  case DType::Bool:
    return "|b1";
  default:
    return "<f4";
  }
}

absl::StatusOr<HostTensor> readNpy(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream os;
  os << in.rdbuf();
  std::string buf = os.str();
  auto error = [&](auto &&...parts) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", parts...));
  };
  if (buf.size() < 10 || buf.compare(0, 6, "\x93NUMPY") != 0)
    return error("not a .npy file");
  uint8_t major = static_cast<uint8_t>(buf[6]);
  size_t headerLen, headerStart;
  if (major == 1) {
    headerLen = static_cast<uint8_t>(buf[8]) |
                (static_cast<size_t>(static_cast<uint8_t>(buf[9])) << 8);
    headerStart = 10;
  } else if (major == 2 || major == 3) {
    if (buf.size() < 12)
      return error("truncated header");
    headerLen = 0;
    for (int i = 3; i >= 0; --i)
      headerLen = (headerLen << 8) | static_cast<uint8_t>(buf[8 + i]);
    headerStart = 12;
  } else {
    return error("unsupported .npy version ", major);
  }
  if (headerStart + headerLen > buf.size())
    return error("header runs past the end of the file");
  std::string header = buf.substr(headerStart, headerLen);
  auto field = [&](const std::string &key) -> std::string {
    size_t k = header.find("'" + key + "'");
    if (k == std::string::npos)
      return "";
    size_t colon = header.find(':', k);
    if (colon == std::string::npos)
      return "";
    size_t start = header.find_first_not_of(' ', colon + 1);
    if (start == std::string::npos)
      return "";
    char open = header[start];
    size_t end;
    if (open == '\'')
      end = header.find('\'', start + 1);
    else if (open == '(')
      end = header.find(')', start + 1);
    else
      end = header.find_first_of(",}", start);
    if (end == std::string::npos)
      return "";
    return header.substr(start,
                         end - start + (open == '(' || open == '\'' ? 1 : 0));
  };
  std::string descr = field("descr");
  std::string fortran = field("fortran_order");
  std::string shapeText = field("shape");
  if (descr.size() < 3 || shapeText.empty() || fortran.empty())
    return error("malformed header '", header, "'");
  if (fortran.rfind("True", 0) == 0)
    return error("Fortran-order arrays are not supported");
  descr = descr.substr(1, descr.size() - 2);
  std::optional<DType> dtype;
  for (DType d : {DType::F64, DType::F32, DType::F16, DType::I64, DType::I32,
                  DType::I16, DType::I8, DType::U8, DType::Bool})
    if (npyDescr(d) == descr || (descr.size() == 3 && descr[0] == '=' &&
                                 npyDescr(d).substr(1) == descr.substr(1)))
      dtype = d;
  if (!dtype)
    return error("unsupported dtype '", descr, "'");
  std::vector<int64_t> shape;
  std::string dims = shapeText.substr(1, shapeText.size() - 2);
  std::stringstream ss(dims);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t a = item.find_first_not_of(' ');
    if (a == std::string::npos)
      continue;
    char *endp = nullptr;
    long long v = std::strtoll(item.c_str() + a, &endp, 10);
    if (v < 0 || endp == item.c_str() + a)
      return error("bad shape '", shapeText, "'");
    shape.push_back(v);
  }
  HostTensor t(*dtype, shape);
  size_t dataStart = headerStart + headerLen;
  if (buf.size() - dataStart != t.bytes.size())
    return error("holds ", buf.size() - dataStart, " data bytes, shape ",
                 t.shapeString(), " needs ", t.bytes.size());
  if (!t.bytes.empty())
    std::memcpy(t.bytes.data(), buf.data() + dataStart, t.bytes.size());
  return t;
}

absl::Status writeNpy(const std::string &path, const HostTensor &tensor) {
  HostTensor converted;
  const HostTensor *t = &tensor;
  if (tensor.dtype == DType::BF16 || tensor.dtype == DType::F8E4M3) {
    converted = HostTensor::fromFloats(tensor.shape, tensor.toFloats());
    t = &converted;
  }
  std::string shape = "(";
  for (size_t i = 0; i < t->shape.size(); ++i)
    absl::StrAppend(&shape, t->shape[i], ", ");
  if (t->shape.size() > 1)
    shape.resize(shape.size() - 2);
  else if (t->shape.size() == 1)
    shape.resize(shape.size() - 1);
  shape += ")";
  std::string header =
      absl::StrCat("{'descr': '", npyDescr(t->dtype),
                   "', 'fortran_order': False, 'shape': ", shape, ", }");
  while ((10 + header.size() + 1) % 64 != 0)
    header.push_back(' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back(1);
  out.push_back(0);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out.append(reinterpret_cast<const char *>(t->bytes.data()), t->bytes.size());
  return writeFileAtomically(path, out);
}

} // namespace ds
