package cinder

import "github.com/cephdocker/ceph-docker-plugin/driver"

// metaFrontEnd records on a Cinder volume the plugin front end that created it (driver.StoredMeta).
const metaFrontEnd = driver.MetaFrontEnd
