#include <alpm.h>
#include <alpm_list.h>
