//===- MpiCommunicator.h - collectives over MPI -------------------*- C++
//-*-===//
//
// The CPU device's communicator when a partitioned model runs as one
// process per rank under mpirun: MPI_COMM_WORLD's ranks are the plan's
// processes (rank r runs the plan of process r). In its own library,
// libds_runtime_mpi, so that libds_runtime links no MPI.
//
//===----------------------------------------------------------------------===//

#ifndef DS_RT_MPICOMMUNICATOR_H
#define DS_RT_MPICOMMUNICATOR_H

#include "ds/rt/Device.h"

#include <memory>

namespace ds::rt {

/// Whether this process was started by an MPI launcher (mpirun sets
/// OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK).
bool launchedByMpi();

/// Initializes MPI (once per process; MPI_Finalize runs at exit) and
/// returns a communicator over MPI_COMM_WORLD, or the error MPI reported.
absl::StatusOr<std::shared_ptr<Communicator>> mpiWorldCommunicator();

/// Ends every rank of the job with `code` (MPI_Abort): what a rank that
/// failed calls, since its peers may wait in a collective forever.
[[noreturn]] void mpiAbort(int code);

} // namespace ds::rt

#endif // DS_RT_MPICOMMUNICATOR_H
