module gomemlimit-injector/workloads/pause

go 1.22
