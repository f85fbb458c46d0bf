module gomemlimit-injector/workloads/sales

go 1.25
