module gomemlimit-injector/workloads/load

go 1.25
