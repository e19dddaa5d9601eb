//===- CpuDevice.cpp - the host CPU as a Device ---------------------------===//
//
// Memory is mmap'ed arenas (MemoryPlanner's Arena: huge-page aligned,
// pre-faulted); a queue runs each step at once on the calling thread,
// splitting large ones over the executor's workers; the step kernels are
// Steps.h's, picked by Step::op(). A step's planned scratch is its own
// buffers followed by its kernels' per-thread region (ThreadScratch.h),
// which the queue binds while the step runs.
//
//===----------------------------------------------------------------------===//

#include "Steps.h"

#include "ds/rt/MemoryPlanner.h"
#include "ds/rt/ThreadPool.h"
#include "ds/rt/ThreadScratch.h"

#include <cstring>

namespace ds::rt {
namespace {

class CpuBuffer final : public Buffer {
public:
  explicit CpuBuffer(Arena arena) : arena(std::move(arena)) {}
  uint8_t *data() const override { return arena.data(); }
  uint64_t size() const override { return arena.size(); }

private:
  Arena arena;
};

/// The step's own scratch (StepContext::scratch, a multiple of 64 bytes)
/// and what its kernels take from ThreadScratch.
StepScratch stepScratch(const cpu::ShapeView &v) {
  switch (v.step.op()) {
  case OpCode::Linear:
    return {cpu::scratchLinear(v), cpu::threadScratchLinear(v)};
  case OpCode::Router:
    return {cpu::scratchRouter(v), cpu::threadScratchRouter(v)};
  case OpCode::MoE:
    return {cpu::scratchMoE(v), cpu::threadScratchMoE(v)};
  case OpCode::Rope:
    return {cpu::scratchRope(v), cpu::threadScratchRope(v)};
  case OpCode::Attention:
    return {cpu::scratchAttention(v), cpu::threadScratchAttention(v)};
  case OpCode::MLAAttention:
    return {cpu::scratchMLAAttention(v), cpu::threadScratchMLAAttention(v)};
  case OpCode::AllGather:
    return {cpu::scratchAllGather(v), {}};
  default:
    return {};
  }
}

class CpuQueue final : public Queue {
public:
  CpuQueue(ThreadPool *pool, Communicator *communicator)
      : pool(pool), communicator(communicator) {}

  /// Binds this thread (and, through parallelFor, the workers) to the
  /// step's per-thread region, which follows the step's own scratch (as
  /// planScratch laid it out), and runs the step.
  absl::Status run(const Step &step, const StepArgs &args) override {
    ThreadScratch::Binding bind(
        WorkerScratch::carve(args.scratch + args.scratchSize,
                             args.threadScratch, pool ? pool->numWorkers() : 0),
        0);
    return dispatch(step, args);
  }

  absl::Status synchronize() override { return absl::OkStatus(); }

private:
  absl::Status dispatch(const Step &step, const StepArgs &args) {
    cpu::StepContext c(step, args, pool, communicator);
    switch (step.op()) {
    case OpCode::Embedding:
      return cpu::runEmbedding(c);
    case OpCode::RMSNorm:
      return cpu::runRMSNorm(c);
    case OpCode::Linear:
      return cpu::runLinear(c);
    case OpCode::Copy:
      return cpu::runCopy(c);
    case OpCode::Rope:
      return cpu::runRope(c);
    case OpCode::CacheUpdate:
      return cpu::runCacheUpdate(c);
    case OpCode::Attention:
      return cpu::runAttention(c);
    case OpCode::MLAAttention:
      return cpu::runMLAAttention(c);
    case OpCode::Router:
      return cpu::runRouter(c);
    case OpCode::MoE:
      return cpu::runMoE(c);
    case OpCode::Elementwise:
    case OpCode::Generated:
      return cpu::runGenerated(c, generated);
    case OpCode::Alias:
      return absl::OkStatus(); // shares its operand's buffer
    case OpCode::AllReduce:
      return cpu::runAllReduce(c);
    case OpCode::AllGather:
      return cpu::runAllGather(c);
    case OpCode::Send:
      return cpu::runSend(c);
    case OpCode::Recv:
      return cpu::runRecv(c);
    }
    return c.error("unknown step kind");
  }

  ThreadPool *pool;
  Communicator *communicator;
  cpu::GeneratedState generated;
};

class CpuDevice final : public Device {
public:
  const char *name() const override { return "cpu"; }

  absl::StatusOr<std::unique_ptr<Buffer>> allocate(uint64_t bytes) override {
    absl::StatusOr<Arena> a = Arena::create(bytes);
    if (!a.ok())
      return a.status();
    return std::unique_ptr<Buffer>(new CpuBuffer(std::move(*a)));
  }
  absl::Status copyToDevice(void *dst, const void *src,
                            uint64_t bytes) override {
    std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status copyToHost(void *dst, const void *src, uint64_t bytes) override {
    std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }

  absl::Status checkStep(const Model &model, const Step &step,
                         const cpu::Shapes &shapes) const override {
    cpu::ShapeView v{model, step, shapes};
    switch (step.op()) {
    case OpCode::Embedding:
      return cpu::checkEmbedding(v);
    case OpCode::RMSNorm:
      return cpu::checkRMSNorm(v);
    case OpCode::Linear:
      return cpu::checkLinear(v);
    case OpCode::Copy:
      return cpu::checkCopy(v);
    case OpCode::Rope:
      return cpu::checkRope(v);
    case OpCode::CacheUpdate:
      return cpu::checkCacheUpdate(v);
    case OpCode::Attention:
      return cpu::checkAttention(v);
    case OpCode::MLAAttention:
      return cpu::checkMLAAttention(v);
    case OpCode::Router:
      return cpu::checkRouter(v);
    case OpCode::MoE:
      return cpu::checkMoE(v);
    case OpCode::Elementwise:
      return cpu::checkElementwise(v);
    case OpCode::Generated:
      return cpu::checkGenerated(v);
    case OpCode::Alias:
      return cpu::checkAlias(v);
    case OpCode::AllReduce:
      return cpu::checkAllReduce(v);
    case OpCode::AllGather:
      return cpu::checkAllGather(v);
    case OpCode::Send:
    case OpCode::Recv:
      return absl::OkStatus(); // any shape: the peer checks the byte count
    }
    return absl::InvalidArgumentError("unknown step kind");
  }

  StepScratch planScratch(const Model &model, const FunctionPlan &function,
                          const Step &step,
                          const cpu::Shapes &shapes) const override {
    return stepScratch(cpu::ShapeView{model, step, shapes, &function});
  }

  std::unique_ptr<Queue> createQueue(ThreadPool *pool) override {
    return std::make_unique<CpuQueue>(pool, communicator());
  }

  Communicator *communicator() override { return processCommunicator().get(); }
};

} // namespace

std::shared_ptr<Communicator> &processCommunicator() {
  static std::shared_ptr<Communicator> communicator;
  return communicator;
}

void setCommunicator(std::shared_ptr<Communicator> communicator) {
  processCommunicator() = std::move(communicator);
}

std::shared_ptr<Device> cpuDevice() {
  static const std::shared_ptr<Device> device = std::make_shared<CpuDevice>();
  return device;
}

} // namespace ds::rt
