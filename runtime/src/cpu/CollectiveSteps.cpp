//===- CollectiveSteps.cpp - collectives, sends, receives -----------------===//
//
// The collective steps of a partitioned plan, through the communicator of
// the process (setCommunicator: MPI when launched by mpirun), or, for a
// collective over some of the grid's axes, through the communicator of
// this process's group along them (Communicator::group). Every process
// runs the same steps in the same order, so each step is one collective
// call.
//
//===----------------------------------------------------------------------===//

#include "Steps.h"

#include <cstring>

namespace ds::rt::cpu {

namespace {
/// The number of processes a collective over `axes` of the plan's grid
/// spans (every process: no axes, or a plan without a grid).
int64_t groupSize(const ModelPlan &plan, const std::vector<int64_t> &axes) {
  if (axes.empty() || plan.grid.empty())
    return plan.processes;
  return gridGroupOf(plan.grid, axes, plan.process).size;
}
} // namespace

absl::Status checkAllReduce(const ShapeView &v) {
  const Step &s = v.step;
  if (v.of(s.results[0]) != v.of(s.operands[0]))
    return v.bad("all_reduce output");
  return absl::OkStatus();
}

absl::Status checkAllGather(const ShapeView &v) {
  const Step &s = v.step;
  const auto &x = v.of(s.operands[0]), &y = v.of(s.results[0]);
  int64_t axis = s.as<steps::AllGather>().axis;
  if (axis >= static_cast<int64_t>(x.size()) || x.size() != y.size())
    return v.bad("all_gather axis");
  int64_t n = groupSize(v.model.plan(), s.as<steps::AllGather>().gridAxes);
  for (size_t d = 0; d < x.size(); ++d)
    if (y[d] != (static_cast<int64_t>(d) == axis ? x[d] * n : x[d]))
      return v.bad("all_gather output");
  return absl::OkStatus();
}

uint64_t scratchAllGather(const ShapeView &v) {
  // Axis 0 gathers in place; any other goes through process-major blocks.
  if (v.step.as<steps::AllGather>().axis == 0)
    return 0;
  return scratchFloats(v.count(v.step.results[0]));
}

absl::StatusOr<Communicator *>
communicatorFor(StepContext &c, const std::vector<int64_t> &axes) {
  Communicator *comm = c.communicator;
  int64_t processes = c.model.plan().processes;
  if (!comm)
    return c.error(absl::StrCat("a collective step of a plan for ", processes,
                                " processes, but this process has no "
                                "communicator (launch one process per "
                                "rank with mpirun, from a ds built with "
                                "MPI: libds_runtime_mpi)"));
  if (comm->size() != processes || comm->rank() != c.model.plan().process)
    return c.error(absl::StrCat("the plan is process ", c.model.plan().process,
                                " of ", processes, ", this process is rank ",
                                comm->rank(), " of ", comm->size()));
  const ModelPlan &plan = c.model.plan();
  const int64_t size = groupSize(plan, axes);
  if (size == plan.processes)
    return comm;
  absl::StatusOr<Communicator *> group = comm->group(plan.grid, axes);
  if (!group.ok())
    return c.error(std::string(group.status().message()));
  if ((*group)->size() != size)
    return c.error(absl::StrCat("a collective over ", size,
                                " processes got a communicator of ",
                                (*group)->size()));
  return group;
}

absl::Status runAllReduce(StepContext &c) {
  absl::StatusOr<Communicator *> comm =
      communicatorFor(c, c.step.as<steps::AllReduce>().gridAxes);
  if (!comm.ok())
    return comm.status();
  const Step &s = c.step;
  int64_t n = numElements(c.shape(s.operands[0]));
  float *y = c.F(s.results[0]);
  if (y != c.F(s.operands[0]))
    std::memcpy(y, c.F(s.operands[0]), n * sizeof(float));
  absl::Status st = (*comm)->allReduceSum(y, n);
  return st.ok() ? st : c.error(std::string(st.message()));
}

absl::Status runAllGather(StepContext &c) {
  absl::StatusOr<Communicator *> comm =
      communicatorFor(c, c.step.as<steps::AllGather>().gridAxes);
  if (!comm.ok())
    return comm.status();
  const Step &s = c.step;
  const std::vector<int64_t> &x = c.shape(s.operands[0]);
  int64_t axis = s.as<steps::AllGather>().axis;
  int64_t count = numElements(x), procs = (*comm)->size();
  float *y = c.F(s.results[0]);
  if (axis == 0) {
    absl::Status st = (*comm)->allGather(c.F(s.operands[0]), count, y);
    return st.ok() ? st : c.error(std::string(st.message()));
  }
  float *blocks = c.scratch(count * procs);
  if (!blocks)
    return c.error("all_gather scratch was not planned");
  absl::Status st = (*comm)->allGather(c.F(s.operands[0]), count, blocks);
  if (!st.ok())
    return c.error(std::string(st.message()));
  // Block p is [outer, inner]; the result is [outer, procs * inner].
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d)
    outer *= x[d];
  int64_t inner = outer ? count / outer : 0;
  for (int64_t p = 0; p < procs; ++p)
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(y + (o * procs + p) * inner, blocks + (p * outer + o) * inner,
                  inner * sizeof(float));
  return absl::OkStatus();
}

namespace {
/// A Send's operand to, or a Recv's result from, process `peer` of this
/// process's group along `axes`.
absl::Status pointToPoint(StepContext &c, const std::vector<int64_t> &axes,
                          int64_t peer, bool send) {
  absl::StatusOr<Communicator *> comm = communicatorFor(c, axes);
  if (!comm.ok())
    return comm.status();
  const int32_t v = send ? c.step.operands[0] : c.step.results[0];
  const int64_t bytes =
      numElements(c.shape(v)) * static_cast<int64_t>(sizeof(float));
  absl::Status st = send ? (*comm)->send(c.F(v), bytes, static_cast<int>(peer))
                         : (*comm)->recv(c.F(v), bytes, static_cast<int>(peer));
  return st.ok() ? st : c.error(std::string(st.message()));
}
} // namespace

absl::Status runSend(StepContext &c) {
  const auto &cfg = c.step.as<steps::Send>();
  return pointToPoint(c, cfg.gridAxes, cfg.peer, /*send=*/true);
}

absl::Status runRecv(StepContext &c) {
  const auto &cfg = c.step.as<steps::Recv>();
  return pointToPoint(c, cfg.gridAxes, cfg.peer, /*send=*/false);
}

} // namespace ds::rt::cpu
