-- dmd_image_path_suffix_aesthetics: one row per base row, with its image and aesthetic score.
-- base left join image index (on hash) left join aesthetic (on subset and hash).
with base as (

    select * from laion.ods_laion_base

),

downloaded_images as (

    select * from laion.ods_image_index
    where image_path is not null

),

-- One image per hash and one aesthetic score per (subset, hash). Few keys repeat, so only those
-- are ranked; ranking every row would sort the whole input for them.
repeated_image_hashes as (

    select hash
    from downloaded_images
    group by hash
    having count(*) > 1

),

-- A download can hold a sample twice; the order is total, so reruns agree.
image_per_hash as (

    select hash, image_path, image_suffix
    from downloaded_images
    left anti join repeated_image_hashes
        on downloaded_images.hash = repeated_image_hashes.hash

    union all

    select hash, image_path, image_suffix
    from (
        select
            downloaded_images.*,
            row_number() over (
                partition by downloaded_images.hash
                order by folder nulls last, file_name nulls last, key nulls last, image_path nulls last
            ) as image_rank
        from downloaded_images
        left semi join repeated_image_hashes
            on downloaded_images.hash = repeated_image_hashes.hash
    )
    where image_rank = 1

),

aesthetic as (

    select * from laion.ods_laion_aesthetic

),

repeated_aesthetic_keys as (

    select subset, hash
    from aesthetic
    group by subset, hash
    having count(*) > 1

),

-- The first configured aesthetic source holding a hash wins.
aesthetic_per_hash as (

    select subset, hash, aesthetic_score
    from aesthetic
    left anti join repeated_aesthetic_keys
        on aesthetic.subset = repeated_aesthetic_keys.subset
        and aesthetic.hash = repeated_aesthetic_keys.hash

    union all

    select subset, hash, aesthetic_score
    from (
        select
            aesthetic.*,
            row_number() over (
                partition by aesthetic.subset, aesthetic.hash
                order by source_rank, file_name nulls last, aesthetic_score desc nulls last
            ) as aesthetic_rank
        from aesthetic
        left semi join repeated_aesthetic_keys
            on aesthetic.subset = repeated_aesthetic_keys.subset
            and aesthetic.hash = repeated_aesthetic_keys.hash
    )
    where aesthetic_rank = 1

),

final as (

    select
        base.sample_id,
        base.url,
        base.text,
        base.width,
        base.height,
        base.similarity,
        base.hash,
        base.license,
        base.nsfw,
        base.language,
        aesthetic_per_hash.aesthetic_score,
        image_per_hash.image_path,
        image_per_hash.image_suffix,
        base.file_name,
        base.subset
    from base
    left join image_per_hash
        on base.hash = image_per_hash.hash
    left join aesthetic_per_hash
        on base.subset = aesthetic_per_hash.subset
        and base.hash = aesthetic_per_hash.hash

)

select * from final
