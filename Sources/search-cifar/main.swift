import PCDARTS
