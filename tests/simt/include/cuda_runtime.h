// Stand-in for the CUDA runtime header on the emulated device (tests/simt/simt.h).
#pragma once

#include "../simt.h"
