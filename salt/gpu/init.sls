# The whole GPU node, stage by stage as the guide does it by hand.
include:
  - gpu.driver
  - gpu.runtime
  - gpu.toolkit
  - gpu.selinux
  - gpu.users
  - gpu.validate
