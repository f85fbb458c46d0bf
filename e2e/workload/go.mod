module gomemlimit-injector/e2e/workload

go 1.22
