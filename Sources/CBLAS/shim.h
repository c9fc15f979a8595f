// OpenBLAS's CBLAS interface plus its extensions (openblas_get_config, openblas_set_num_threads).
// Debian installs the pthread build's header under openblas-pthread/, which pkg-config puts on the path.
#include <cblas.h>
