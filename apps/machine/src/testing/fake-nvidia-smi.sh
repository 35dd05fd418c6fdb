#!/bin/sh
# A stand-in for nvidia-smi in tests: prints the fixture named by FAKE_NVIDIA_SMI (a file), or fails
# the way nvidia-smi does without a working driver when FAKE_NVIDIA_SMI=driver-failure.
case "$*" in
  *--query-gpu=index,name,uuid,memory.total,memory.used,utilization.gpu,temperature.gpu*--format=csv,noheader,nounits*) ;;
  *) echo "fake nvidia-smi: unexpected arguments: $*" >&2; exit 2 ;;
esac
if [ "$FAKE_NVIDIA_SMI" = "driver-failure" ]; then
  echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
  exit 9
fi
cat "$FAKE_NVIDIA_SMI"
