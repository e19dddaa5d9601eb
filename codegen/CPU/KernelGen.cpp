//===- KernelGen.cpp - generated CPU kernels: MLIR -> LLVM -> code --------===//

#include "ds/codegen/CPU/KernelGen.h"
#include "ds/dialects/DS/IR/DSOps.h"
#include "ds/rt/CpuInfo.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "mlir/Transforms/Passes.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"

#ifndef DS_LLD_PATH
#define DS_LLD_PATH "ld.lld"
#endif

using namespace mlir;
using namespace ds;

KernelModule::KernelModule(MLIRContext *ctx)
    : mod(ModuleOp::create(UnknownLoc::get(ctx))) {
  ctx->loadDialect<func::FuncDialect, linalg::LinalgDialect,
                   memref::MemRefDialect, arith::ArithDialect,
                   math::MathDialect, LLVM::LLVMDialect>();
}

namespace {
/// A key equal for ops that compute the same thing on the same types: op
/// names, attributes, types, and which earlier value each operand is.
std::string structuralKey(Operation *op) {
  std::string key;
  llvm::raw_string_ostream os(key);
  os << op->getName() << op->getAttrDictionary();
  for (Type t : op->getOperandTypes())
    os << "|" << t;
  for (Type t : op->getResultTypes())
    os << "->" << t;
  llvm::DenseMap<Value, int> ids;
  int next = 0;
  for (Region &region : op->getRegions())
    for (Block &block : region)
      for (BlockArgument a : block.getArguments()) {
        ids[a] = next++;
        os << ";arg:" << a.getType();
      }
  op->walk([&](Operation *inner) {
    if (inner == op)
      return;
    os << ";" << inner->getName() << inner->getAttrDictionary() << "(";
    for (Value v : inner->getOperands())
      os << ids.lookup(v) << ",";
    os << ")";
    for (Value r : inner->getResults()) {
      ids[r] = next++;
      os << ":" << r.getType();
    }
  });
  return key;
}
} // namespace

FailureOr<std::string> KernelModule::addElementwise(FusedElementwiseOp op) {
  std::string key = structuralKey(op);
  if (auto it = dedup.find(key); it != dedup.end())
    return it->second;
  FailureOr<std::string> sym = buildElementwise(op);
  if (succeeded(sym))
    dedup[key] = *sym;
  return sym;
}

FailureOr<std::string> KernelModule::addRMSNorm(RMSNormOp op) {
  std::string key = structuralKey(op);
  if (auto it = dedup.find(key); it != dedup.end())
    return it->second;
  FailureOr<std::string> sym = buildRMSNorm(op);
  if (succeeded(sym))
    dedup[key] = *sym;
  return sym;
}

namespace {

/// Float types whose tensors the CPU backend keeps in f32 buffers: f32,
/// and bf16 / f16 values rounded to their precision.
bool storedAsF32(Type t) { return t.isF32() || t.isBF16() || t.isF16(); }

/// Clones a ds.fused_elementwise body op computing in f32: every bf16 / f16
/// value becomes an f32 value holding it exactly, and each op that produces
/// one computes in f32 and rounds (arith.truncf then arith.extf), which is
/// what the interpreter does for every low-precision op result. extf from a
/// low precision is then the identity.
void cloneInF32(OpBuilder &b, Operation &op, IRMapping &map) {
  Type f32 = b.getF32Type();
  auto low = [](Type t) { return t.isBF16() || t.isF16(); };
  Location loc = op.getLoc();
  if (auto ext = dyn_cast<arith::ExtFOp>(op);
      ext && low(ext.getIn().getType()) && ext.getType().isF32()) {
    map.map(ext.getResult(), map.lookup(ext.getIn()));
    return;
  }
  auto round = [&](Value v, Type to) -> Value {
    Value t = arith::TruncFOp::create(b, loc, to, v);
    return arith::ExtFOp::create(b, loc, f32, t);
  };
  if (auto trunc = dyn_cast<arith::TruncFOp>(op);
      trunc && low(trunc.getType()) && trunc.getIn().getType().isF32()) {
    map.map(trunc.getResult(),
            round(map.lookup(trunc.getIn()), trunc.getType()));
    return;
  }
  if (llvm::none_of(op.getResultTypes(), low)) {
    b.clone(op, map);
    return;
  }
  if (auto c = dyn_cast<arith::ConstantOp>(op)) {
    auto value = cast<FloatAttr>(c.getValue());
    map.map(c.getResult(),
            arith::ConstantOp::create(
                b, loc, b.getF32FloatAttr(value.getValueAsDouble())));
    return;
  }
  // Same op on f32 operands, then each low-precision result rounded.
  OperationState state(loc, op.getName());
  for (Value v : op.getOperands())
    state.addOperands(map.lookupOrDefault(v));
  state.addAttributes(op.getAttrs());
  for (Type t : op.getResultTypes())
    state.addTypes(low(t) ? f32 : t);
  Operation *wide = b.create(state);
  for (auto [from, to] : llvm::zip(op.getResults(), wide->getResults()))
    map.map(from, low(from.getType()) ? round(to, from.getType()) : to);
}

} // namespace

FailureOr<std::string> KernelModule::buildElementwise(FusedElementwiseOp op) {
  MLIRContext *ctx = op.getContext();
  Location loc = op.getLoc();
  auto outType = cast<RankedTensorType>(op.getResult().getType());
  int64_t rank = outType.getRank();
  SmallVector<Type> argTypes;
  SmallVector<AffineMap> maps;
  // bf16 / f16 tensors are f32 buffers holding rounded values (see
  // storedAsF32).
  Type f32 = Float32Type::get(ctx);
  for (Value in : op.getInputs()) {
    auto t = dyn_cast<RankedTensorType>(in.getType());
    if (!t || !storedAsF32(t.getElementType()))
      return op.emitError("the CPU backend runs f32, bf16 and f16 elementwise "
                          "kernels only");
    argTypes.push_back(MemRefType::get(t.getShape(), f32));
    // Right-aligned broadcasting: a static 1 against a wider dim repeats.
    SmallVector<AffineExpr> exprs;
    int64_t offset = rank - t.getRank();
    for (int64_t a = 0; a < t.getRank(); ++a) {
      int64_t od = outType.getDimSize(offset + a);
      if (t.getDimSize(a) == 1 && od != 1)
        exprs.push_back(getAffineConstantExpr(0, ctx));
      else
        exprs.push_back(getAffineDimExpr(offset + a, ctx));
    }
    maps.push_back(AffineMap::get(rank, 0, exprs, ctx));
  }
  if (!storedAsF32(outType.getElementType()))
    return op.emitError("the CPU backend runs f32, bf16 and f16 elementwise "
                        "kernels only");
  argTypes.push_back(MemRefType::get(outType.getShape(), f32));
  maps.push_back(AffineMap::getMultiDimIdentityMap(rank, ctx));

  std::string name = "ew" + std::to_string(count++);
  OpBuilder b(ctx);
  b.setInsertionPointToEnd(mod->getBody());
  auto fn = func::FuncOp::create(b, loc, name, b.getFunctionType(argTypes, {}));
  fn->setAttr(LLVM::LLVMDialect::getEmitCWrapperAttrName(), b.getUnitAttr());
  Block *entry = fn.addEntryBlock();
  b.setInsertionPointToStart(entry);
  SmallVector<Value> ins(entry->getArguments().drop_back());
  Value out = entry->getArguments().back();
  SmallVector<utils::IteratorType> iters(rank, utils::IteratorType::parallel);
  Block &body = op.getBody().front();
  linalg::GenericOp::create(
      b, loc, ValueRange(ins), ValueRange{out}, maps, iters,
      [&](OpBuilder &nb, Location l, ValueRange args) {
        IRMapping map;
        for (auto [from, to] : llvm::zip(body.getArguments(), args))
          map.map(from, to);
        for (Operation &o : body.without_terminator())
          cloneInF32(nb, o, map);
        Value result = map.lookup(body.getTerminator()->getOperand(0));
        linalg::YieldOp::create(nb, l, result);
      });
  func::ReturnOp::create(b, loc);
  return "ds_kernel_" + name;
}

FailureOr<std::string> KernelModule::buildRMSNorm(RMSNormOp op) {
  MLIRContext *ctx = op.getContext();
  Location loc = op.getLoc();
  auto xType = dyn_cast<RankedTensorType>(op.getInput().getType());
  auto wType = dyn_cast<RankedTensorType>(op.getWeight().getType());
  if (!xType || !wType || !xType.getElementType().isF32() ||
      !wType.getElementType().isF32() || xType.getRank() < 1)
    return op.emitError("the CPU backend generates f32 RMSNorm only");
  int64_t rank = xType.getRank();
  Type f32 = Float32Type::get(ctx), f64 = Float64Type::get(ctx);
  auto xMem = MemRefType::get(xType.getShape(), f32);
  auto wMem = MemRefType::get(wType.getShape(), f32);
  std::string name = "rmsnorm" + std::to_string(count++);
  OpBuilder b(ctx);
  b.setInsertionPointToEnd(mod->getBody());
  auto fn = func::FuncOp::create(b, loc, name,
                                 b.getFunctionType({xMem, wMem, xMem}, {}));
  fn->setAttr(LLVM::LLVMDialect::getEmitCWrapperAttrName(), b.getUnitAttr());
  Block *entry = fn.addEntryBlock();
  b.setInsertionPointToStart(entry);
  Value x = entry->getArgument(0), w = entry->getArgument(1),
        y = entry->getArgument(2);
  // Per-row sums of squares, [leading dims] f64.
  SmallVector<int64_t> lead(xType.getShape().drop_back());
  SmallVector<Value> dynLead;
  for (int64_t i = 0; i < rank - 1; ++i)
    if (xType.isDynamicDim(i))
      dynLead.push_back(memref::DimOp::create(b, loc, x, i));
  auto accType = MemRefType::get(lead, f64);
  Value acc = memref::AllocOp::create(b, loc, accType, dynLead);
  Value zero = arith::ConstantOp::create(b, loc, b.getF64FloatAttr(0.0));
  linalg::FillOp::create(b, loc, zero, acc);
  AffineMap full = AffineMap::getMultiDimIdentityMap(rank, ctx);
  SmallVector<AffineExpr> leadExprs;
  for (int64_t i = 0; i < rank - 1; ++i)
    leadExprs.push_back(getAffineDimExpr(i, ctx));
  AffineMap leadMap = AffineMap::get(rank, 0, leadExprs, ctx);
  AffineMap lastMap =
      AffineMap::get(rank, 0, {getAffineDimExpr(rank - 1, ctx)}, ctx);
  SmallVector<utils::IteratorType> reduce(rank, utils::IteratorType::parallel);
  reduce.back() = utils::IteratorType::reduction;
  linalg::GenericOp::create(
      b, loc, ValueRange{x}, ValueRange{acc},
      ArrayRef<AffineMap>{full, leadMap}, reduce,
      [&](OpBuilder &nb, Location l, ValueRange args) {
        Value e = arith::ExtFOp::create(nb, l, f64, args[0]);
        Value sq = arith::MulFOp::create(nb, l, e, e);
        linalg::YieldOp::create(
            nb, l, Value(arith::AddFOp::create(nb, l, args[1], sq)));
      });
  // y = w * (x * float(1 / sqrt(sum / d + eps))).
  Value d = memref::DimOp::create(b, loc, x, rank - 1);
  Value dInt = arith::IndexCastOp::create(b, loc, b.getI64Type(), d);
  Value dF = arith::SIToFPOp::create(b, loc, f64, dInt);
  Value eps = arith::ConstantOp::create(
      b, loc, b.getF64FloatAttr(op.getEpsilon().convertToDouble()));
  Value one = arith::ConstantOp::create(b, loc, b.getF64FloatAttr(1.0));
  SmallVector<utils::IteratorType> par(rank, utils::IteratorType::parallel);
  linalg::GenericOp::create(
      b, loc, ValueRange{x, acc, w}, ValueRange{y},
      ArrayRef<AffineMap>{full, leadMap, lastMap, full}, par,
      [&](OpBuilder &nb, Location l, ValueRange args) {
        Value mean = arith::DivFOp::create(nb, l, args[1], dF);
        Value root = math::SqrtOp::create(
            nb, l, arith::AddFOp::create(nb, l, mean, eps));
        Value inv = arith::TruncFOp::create(
            nb, l, f32, arith::DivFOp::create(nb, l, one, root));
        Value normed = arith::MulFOp::create(nb, l, args[0], inv);
        linalg::YieldOp::create(
            nb, l, Value(arith::MulFOp::create(nb, l, args[2], normed)));
      });
  memref::DeallocOp::create(b, loc, acc);
  func::ReturnOp::create(b, loc);
  return "ds_kernel_" + name;
}

LogicalResult KernelModule::lowerToLLVM() {
  MLIRContext *ctx = mod->getContext();
  // Math functions as polynomials: plain arithmetic that LLVM vectorizes
  // (a libm call would keep the loop scalar).
  {
    RewritePatternSet patterns(ctx);
    populateMathPolynomialApproximationPatterns(
        patterns, [](StringRef name) { return name != "rsqrt"; });
    if (failed(applyPatternsGreedily(*mod, std::move(patterns))))
      return failure();
  }
  PassManager pm(ctx);
  pm.addNestedPass<func::FuncOp>(createConvertLinalgToLoopsPass());
  // bf16 rounding (arith.truncf to bf16) as integer arithmetic: LLVM would
  // otherwise call __truncsfbf2, which neither the JIT nor the artifact's
  // shared object links.
  arith::ArithExpandOpsPassOptions expand;
  expand.includeBf16 = true;
  pm.addNestedPass<func::FuncOp>(arith::createArithExpandOpsPass(expand));
  pm.addPass(createLowerAffinePass());
  pm.addPass(createSCFToControlFlowPass());
  pm.addPass(memref::createExpandStridedMetadataPass());
  pm.addPass(createLowerAffinePass());
  pm.addPass(createFinalizeMemRefToLLVMConversionPass());
  pm.addPass(createConvertMathToLLVMPass());
  pm.addPass(createArithToLLVMConversionPass());
  pm.addPass(createConvertFuncToLLVMPass());
  pm.addPass(createConvertControlFlowToLLVMPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
  if (failed(pm.run(*mod)))
    return failure();
  // Entry points: ds_kernel_X(void **d) calls _mlir_ciface_X(d[0], d[1], ...).
  OpBuilder b(ctx);
  b.setInsertionPointToEnd(mod->getBody());
  auto ptr = LLVM::LLVMPointerType::get(ctx);
  auto voidTy = LLVM::LLVMVoidType::get(ctx);
  SmallVector<LLVM::LLVMFuncOp> wrapped;
  for (auto f : mod->getOps<LLVM::LLVMFuncOp>())
    if (f.getName().starts_with("_mlir_ciface_") && !f.isExternal())
      wrapped.push_back(f);
  for (LLVM::LLVMFuncOp f : wrapped) {
    std::string name =
        "ds_kernel_" + f.getName().drop_front(strlen("_mlir_ciface_")).str();
    Location loc = f.getLoc();
    auto fn = LLVM::LLVMFuncOp::create(
        b, loc, name, LLVM::LLVMFunctionType::get(voidTy, {ptr}));
    Block *entry = fn.addEntryBlock(b);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(entry);
    SmallVector<Value> args;
    for (unsigned i = 0; i < f.getNumArguments(); ++i) {
      Value at = LLVM::GEPOp::create(b, loc, ptr, ptr, entry->getArgument(0),
                                     ArrayRef<LLVM::GEPArg>{int32_t(i)});
      args.push_back(LLVM::LoadOp::create(b, loc, ptr, at));
    }
    LLVM::CallOp::create(b, loc, f, args);
    LLVM::ReturnOp::create(b, loc, ValueRange{});
  }
  return success();
}

namespace {
void initLLVMTargets() {
  static bool once = [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    return true;
  }();
  (void)once;
}

/// LLVM's feature string for the host, and the extensions of it the code
/// may use that the loader must find (TargetInfo::requiredIsa). Vector
/// extensions the runtime cannot check are turned off, so every extension
/// the code may use is recorded.
std::string hostFeatures(std::vector<std::string> &required) {
  const std::vector<std::string> &checked = ds::rt::checkedIsa();
  std::string out;
  for (const auto &f : llvm::sys::getHostCPUFeatures()) {
    if (!out.empty())
      out += ",";
    bool on = f.second;
    llvm::StringRef name = f.first();
    if (ds::rt::avx2Forced() &&
        (name.starts_with("avx512") || name.starts_with("amx") ||
         name.starts_with("avx10")))
      on = false;
    bool known = llvm::is_contained(checked, name.str());
    if (on && !known && (name.starts_with("avx") || name.starts_with("amx")))
      on = false;
    if (on && known)
      required.push_back(name.str());
    out += (on ? "+" : "-") + name.str();
  }
  llvm::sort(required);
  return out;
}
} // namespace

ds::rt::TargetInfo ds::hostTarget() {
  ds::rt::TargetInfo t;
  t.triple = llvm::sys::getProcessTriple();
  t.cpu =
      ds::rt::avx2Forced() ? "x86-64-v3" : llvm::sys::getHostCPUName().str();
  t.features = hostFeatures(t.requiredIsa);
  return t;
}

LogicalResult ds::emitSharedObject(ModuleOp lowered, std::string &sharedObject,
                                   std::string &error) {
  initLLVMTargets();
  registerBuiltinDialectTranslation(*lowered->getContext());
  registerLLVMDialectTranslation(*lowered->getContext());
  llvm::LLVMContext llvmCtx;
  std::unique_ptr<llvm::Module> module =
      translateModuleToLLVMIR(lowered, llvmCtx, "ds_kernels");
  if (!module) {
    error = "translation to LLVM IR failed";
    return failure();
  }
  ds::rt::TargetInfo target = hostTarget();
  llvm::Triple triple(target.triple);
  std::string lookupError;
  const llvm::Target *llvmTarget =
      llvm::TargetRegistry::lookupTarget(triple, lookupError);
  if (!llvmTarget) {
    error = "no LLVM target for " + target.triple + ": " + lookupError;
    return failure();
  }
  std::unique_ptr<llvm::TargetMachine> tm(llvmTarget->createTargetMachine(
      triple, target.cpu, target.features, llvm::TargetOptions(),
      llvm::Reloc::PIC_, std::nullopt, llvm::CodeGenOptLevel::Aggressive));
  module->setDataLayout(tm->createDataLayout());
  module->setTargetTriple(triple);
  auto optimize = makeOptimizingTransformer(3, 0, tm.get());
  if (llvm::Error e = optimize(module.get())) {
    error = "LLVM optimization failed: " + llvm::toString(std::move(e));
    return failure();
  }
  llvm::SmallString<128> dir;
  if (llvm::sys::fs::createUniqueDirectory("ds-codegen", dir)) {
    error = "cannot create a temporary directory";
    return failure();
  }
  std::string obj = (dir + "/kernels.o").str(),
              so = (dir + "/kernels.so").str();
  llvm::scope_exit cleanup([&] {
    llvm::sys::fs::remove(obj);
    llvm::sys::fs::remove(so);
    llvm::sys::fs::remove(dir);
  });
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(obj, ec);
    if (ec) {
      error = "cannot write " + obj + ": " + ec.message();
      return failure();
    }
    llvm::legacy::PassManager pm;
    if (tm->addPassesToEmitFile(pm, os, nullptr,
                                llvm::CodeGenFileType::ObjectFile)) {
      error = "the target cannot emit object files";
      return failure();
    }
    pm.run(*module);
  }
  std::string lld = DS_LLD_PATH;
  if (const char *env = std::getenv("DS_LLD"))
    lld = env;
  llvm::ErrorOr<std::string> found = llvm::sys::findProgramByName(lld);
  if (!found) {
    error = "the linker '" + lld +
            "' (lld-22) is not installed; set DS_LLD to an ld.lld";
    return failure();
  }
  std::string message;
  int rc = llvm::sys::ExecuteAndWait(
      *found, {*found, "-shared", "--hash-style=gnu", "-o", so, obj},
      std::nullopt, {}, 0, 0, &message);
  if (rc != 0) {
    error = "linking the kernels failed (" + *found + "): " + message;
    return failure();
  }
  auto buffer = llvm::MemoryBuffer::getFile(so);
  if (!buffer) {
    error = "cannot read " + so;
    return failure();
  }
  sharedObject = (*buffer)->getBuffer().str();
  return success();
}

FailureOr<std::unique_ptr<ExecutionEngine>> ds::jitKernels(ModuleOp lowered,
                                                           std::string &error) {
  initLLVMTargets();
  registerBuiltinDialectTranslation(*lowered->getContext());
  registerLLVMDialectTranslation(*lowered->getContext());
  // The transformer is a function_ref: keep the callable alive.
  auto optimize = makeOptimizingTransformer(3, 0, nullptr);
  ExecutionEngineOptions options;
  options.transformer = optimize;
  options.jitCodeGenOptLevel = llvm::CodeGenOptLevel::Aggressive;
  auto engine = ExecutionEngine::create(lowered, options);
  if (!engine) {
    error = "JIT compilation failed: " + llvm::toString(engine.takeError());
    return failure();
  }
  return std::move(*engine);
}
