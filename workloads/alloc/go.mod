module gomemlimit-injector/workloads/alloc

go 1.22
