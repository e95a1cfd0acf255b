package rbd

import "github.com/cephdocker/ceph-docker-plugin/driver"

// metaFrontEnd records on an image the plugin front end that created it (driver.StoredMeta).
const metaFrontEnd = driver.MetaFrontEnd
