// Shared prelude of the per-ISA translation units: the headers kernels_impl.inc relies on.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels.h"
#include "winograd_matrices.h"
