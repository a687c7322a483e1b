"""The kernel view: radial kernels and Nadaraya–Watson regression on any data."""

from .kernels import (KERNELS, GaussianKernel, Kernel, NWeightKernel, biweight, epanechnikov, gaussian,
                      get_kernel, support_radius, triweight)
from .nadaraya_watson import nadaraya_watson, nadaraya_watson_weights

__all__ = ["Kernel", "GaussianKernel", "NWeightKernel", "gaussian", "epanechnikov", "biweight", "triweight",
           "KERNELS", "get_kernel", "support_radius", "nadaraya_watson", "nadaraya_watson_weights"]
